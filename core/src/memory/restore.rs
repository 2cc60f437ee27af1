//! Rebuilding an address space in the stopped restore child, by remote syscalls from its
//! trampoline: cryo's own mappings out, vdso block moved to the dumped addresses, the image's
//! VMAs mapped and filled (pread issued by the child from its pages image: one copy),
//! protections set, mm fields (brk, arg/env, auxv, exe) installed with PR_SET_MM_MAP.

use std::os::fd::AsFd;

use cryo_proto::image::{MmCore, PageRun, Vma, VmaKind};
use nix::unistd::Pid;
use tracing::{debug, debug_span};

use super::error::MemoryError;
use super::premap::Staged;
use super::{is_special, IO_CHUNK, PAGE};
use crate::error::{Error, Result};
use crate::proc;
use crate::remote::{BatchCall, BatchSite, Remote};
use crate::sys::ptrace as pt;
use crate::sys::uffd::Userfault;

const MADV_POPULATE_WRITE: u64 = 23;
/// Runs at least this long are populated in one call before they are filled: one fault per
/// page taken inside pread costs three times more.
const POPULATE_MIN: u64 = 64 << 10;
const PR_SET_MM: u64 = 35;
/// mlock2's flag: lock the pages as they are faulted in, not at once.
const MLOCK_ONFAULT: u64 = 1;
const PR_SET_MM_MAP: u64 = 14;
const RSEQ_FLAG_UNREGISTER: u64 = 1;

/// The fds the restore child opened for its reshaping, at numbers chosen by the parent.
#[derive(Debug, Clone, Default)]
pub struct MappingFds {
    /// The pages image.
    pub pages: u64,
    /// The executable, for PR_SET_MM_MAP.
    pub exe: u64,
    /// (file id, writable, fd) of every mapped file.
    pub files: Vec<(u32, bool, u64)>,
    /// (file id, fd) of the packet sockets whose rings are mapped: the process's own fds
    /// (not closed after the reshaping).
    pub sockets: Vec<(u32, u64)>,
}

impl MappingFds {
    /// The fd of file `id`, opened for writing or not.
    pub fn file(&self, id: u32, writable: bool) -> Option<u64> {
        self.files
            .iter()
            .find(|(i, w, _)| *i == id && *w == writable)
            .map(|f| f.2)
    }

    fn socket(&self, id: u32) -> Option<u64> {
        self.sockets.iter().find(|s| s.0 == id).map(|s| s.1)
    }

    /// Every fd, to close once the reshaping is over.
    pub fn all(&self) -> Vec<u64> {
        let mut v = vec![self.pages, self.exe];
        v.extend(self.files.iter().map(|f| f.2));
        v
    }
}

/// Where the pages of a process come from.
#[derive(Debug, Clone, Copy)]
pub struct PageSources<'a> {
    /// cryo's mapping of the pages image, if it has one.
    pub mapped: Option<&'a [u8]>,
    /// The VMAs the process staged, filled already, in its cryo phase (moved into place).
    pub staged: &'a [Staged],
}

/// Whether a VMA needs its file opened writable: shared, and writable or allowed to become
/// so (its file was opened for writing: a later mprotect(PROT_WRITE) must work again), or
/// mapped through a writable fd all the same (a write-sealed memfd: VmFlags "sh" without
/// "mw", which a read-only fd would not give); or private, its file opened for writing (its
/// map_files link shows it).
pub fn needs_writable_file(vma: &Vma) -> bool {
    vma.file_writable
        || vma.map_flags & libc::MAP_SHARED as u32 != 0
            && (vma.prot & libc::PROT_WRITE as u32 != 0 || vma.may_write)
}

/// Replaces the address space of stopped `child` (a fork of cryo running `remote` at its
/// trampoline `keep`) with the image's. `batch` is the trampoline's batch loop, its table a
/// writable page inside `keep` that also serves as scratch memory.
pub fn reshape(
    child: Pid,
    remote: &Remote,
    keep: (u64, u64),
    batch: BatchSite,
    mm: &MmCore,
    fds: &MappingFds,
    sources: PageSources<'_>,
) -> Result<()> {
    let (pages, staged) = (sources.mapped, sources.staged);
    let _span = debug_span!("reshape", %child).entered();
    let sys = |op: String| move |e: std::io::Error| Error::sys(child, op, e);

    // glibc registered an rseq area in cryo's TLS, about to be unmapped.
    let rseq = pt::get_rseq(child).map_err(sys("read rseq".into()))?;
    if rseq.abi_pointer != 0 {
        remote
            .call(
                libc::SYS_rseq,
                &[
                    rseq.abi_pointer,
                    rseq.abi_size as u64,
                    RSEQ_FLAG_UNREGISTER,
                    rseq.signature as u64,
                ],
            )
            .map_err(sys("unregister cryo's rseq".into()))?;
    }

    // 1. cryo's own mappings go, all but the trampoline and the kernel's special ones.
    // Staged regions next to each other may show as one mapping (warm memory handed over
    // in neighbouring pieces): what is not staged of each mapping goes.
    let current = proc::maps(child)?;
    let mut staged_ranges: Vec<std::ops::Range<u64>> =
        staged.iter().map(|s| s.at..s.at + s.size()).collect();
    staged_ranges.sort_by_key(|r| r.start);
    let mut doomed: Vec<(u64, u64)> = Vec::new();
    for m in &current {
        let kind = super::classify(m);
        if is_special(kind) || (m.start >= keep.0 && m.end <= keep.1) {
            continue;
        }
        for (piece, kept) in super::premap::split_by(m.start..m.end, &staged_ranges) {
            if kept {
                continue;
            }
            match doomed.last_mut() {
                Some(last) if last.1 == piece.start => last.1 = piece.end,
                _ => doomed.push((piece.start, piece.end)),
            }
        }
    }
    let unmaps: Vec<BatchCall> = doomed
        .iter()
        .map(|&(start, end)| (libc::SYS_munmap, [start, end - start, 0, 0, 0, 0]))
        .collect();
    run_batch(child, remote, batch, &unmaps, |i| {
        format!("munmap {:#x}-{:#x}", doomed[i].0, doomed[i].1)
    })?;

    tracing::trace!("cryo unmapped");
    // 2. The vdso block to where the image had it.
    move_vdso(child, remote, &current, &mm.vmas)?;

    tracing::trace!("vdso moved");
    // 3. The image's VMAs, writable while they are filled; the staged ones, filled, moved
    // into place.
    let staged_at = |vma: &Vma| staged.iter().find(|s| s.start == vma.start).map(|s| s.at);
    let mut filled: Vec<bool> = mm.vmas.iter().map(|v| staged_at(v).is_some()).collect();
    for run in &mm.pages {
        if let Some(i) = mm
            .vmas
            .iter()
            .position(|v| v.start <= run.addr && run.addr < v.end)
        {
            filled[i] = true;
        }
    }
    let mut maps: Vec<BatchCall> = Vec::with_capacity(mm.vmas.len());
    let mut mapped: Vec<&Vma> = Vec::with_capacity(mm.vmas.len());
    // (VMA, protection, mmap flags) of the VMAs kept apart from the one before them.
    let mut apart: Vec<(&Vma, u64, u64)> = Vec::new();
    for (vma, &fill) in mm.vmas.iter().zip(&filled) {
        let kind = VmaKind::try_from(vma.kind).unwrap_or(VmaKind::Invalid);
        // AIO rings are made by io_setup once the rest is in place (step 4b).
        if is_special(kind) || kind == VmaKind::AioRing {
            continue;
        }
        let mut prot = vma.prot as u64;
        if fill {
            prot |= (libc::PROT_READ | libc::PROT_WRITE) as u64;
        }
        let len = vma.end - vma.start;
        if kind == VmaKind::SysvShm {
            // A piece after the first of an attachment whose protection was changed in part:
            // the first piece's shmat maps it, step 5 gives it its protection.
            if vma.pgoff != 0 {
                continue;
            }
            // A SysV attachment is made by shmat of the segment cryo made or found again:
            // writable when it may be made writable (attached without SHM_RDONLY), executable
            // when a piece of it is.
            let pieces = mm
                .vmas
                .iter()
                .filter(|v| v.kind == vma.kind && v.file_id == vma.file_id && v.start >= vma.start);
            let exec = pieces
                .take_while(|v| v.start == vma.start || v.pgoff != 0)
                .any(|v| v.prot & libc::PROT_EXEC as u32 != 0);
            let flags = crate::ipc::shm::shmat_flags(vma.prot, vma.may_write, exec);
            let shmid = vma.sysv_shmid as u32 as u64;
            maps.push((libc::SYS_shmat, [shmid, vma.start, flags, 0, 0, 0]));
            mapped.push(vma);
            continue;
        }
        if kind == VmaKind::PacketRing {
            // The rings the socket restore made again, through the process's own fd on it.
            let fd = fds.socket(vma.file_id).ok_or_else(|| {
                Error::from(MemoryError::NoFileForMapping {
                    pid: child,
                    start: vma.start,
                    name: vma.name.clone(),
                })
            })?;
            // Mapped private, its pages written since come back from the pages image.
            let share = if vma.map_flags & libc::MAP_SHARED as u32 != 0 {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            let flags = (share | libc::MAP_FIXED_NOREPLACE) as u64;
            maps.push((libc::SYS_mmap, [vma.start, len, prot, flags, fd, 0]));
            mapped.push(vma);
            continue;
        }
        if let Some(at) = staged_at(vma) {
            let how = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
            maps.push((libc::SYS_mremap, [at, len, len, how, vma.start, 0]));
            mapped.push(vma);
            continue;
        }
        let mut flags = (vma.map_flags | libc::MAP_FIXED_NOREPLACE as u32) as u64;
        if vma.apart && matches!(kind, VmaKind::Anon | VmaKind::Heap) {
            apart.push((vma, prot, flags | libc::MAP_ANONYMOUS as u64));
            continue;
        }
        // Shared anonymous memory maps the one object cryo made for the tree (images before
        // format 1.1 have no object: fresh memory, filled from the pages).
        let from_file = matches!(kind, VmaKind::FilePrivate | VmaKind::FileShared)
            || (kind == VmaKind::ShmemAnon && vma.file_id != 0);
        let (fd, off) = if from_file {
            let fd = fds
                .file(vma.file_id, needs_writable_file(vma))
                .ok_or_else(|| {
                    Error::from(MemoryError::NoFileForMapping {
                        pid: child,
                        start: vma.start,
                        name: vma.name.clone(),
                    })
                })?;
            (fd, vma.pgoff)
        } else {
            flags |= libc::MAP_ANONYMOUS as u64;
            if vma.hugetlb_page_size != 0 {
                let huge = crate::sys::mmap::hugetlb_size_flag(vma.hugetlb_page_size);
                flags |= (libc::MAP_HUGETLB | huge) as u64;
            }
            (u64::MAX, 0)
        };
        maps.push((libc::SYS_mmap, [vma.start, len, prot, flags, fd, off]));
        mapped.push(vma);
    }
    let got = run_batch(child, remote, batch, &maps, |i| {
        let vma = mapped[i];
        let how = if staged_at(vma).is_some() {
            "move the staged"
        } else {
            "mmap"
        };
        format!("{how} {:#x}-{:#x} {}", vma.start, vma.end, vma.name)
    })?;
    if let Some((vma, at)) = mapped.iter().zip(got).find(|(v, at)| *at != v.start) {
        return Err(MemoryError::Misplaced {
            pid: child,
            start: vma.start,
            at,
        }
        .into());
    }

    map_apart(child, remote, batch, keep, mm, &apart)?;

    tracing::trace!("mapped");
    // 4. Every dumped page: anonymous memory copied in through userfaultfd from the pages
    // image cryo already mapped to check it; the rest (and all of it if that fails) read
    // by the child itself from its pages image.
    let copyable = |addr: u64| {
        mm.vmas
            .iter()
            .find(|v| v.start <= addr && addr < v.end)
            .is_some_and(|v| {
                // hugetlb memory takes whole huge pages, and no userfaultfd registers
                // droppable memory: the child reads them.
                v.hugetlb_page_size == 0
                    && !super::is_droppable(v)
                    && matches!(
                        VmaKind::try_from(v.kind),
                        Ok(VmaKind::Anon | VmaKind::Heap | VmaKind::Stack | VmaKind::ShmemAnon)
                    )
            })
    };
    let in_staged = |r: &&PageRun| staged.iter().any(|s| s.start <= r.addr && r.addr < s.end);
    let runs = mm.pages.iter().filter(|r| !in_staged(r));
    let (by_copy, mut by_read): (Vec<&PageRun>, Vec<&PageRun>) = match pages {
        Some(_) => runs.partition(|r| copyable(r.addr)),
        None => (Vec::new(), runs.collect()),
    };
    if let (Some(src), false) = (pages, by_copy.is_empty()) {
        if let Err(e) = fill_by_copy(child, remote, src, &mm.vmas, &by_copy) {
            debug!("userfaultfd fill failed ({e}); the child reads its pages instead");
            by_read.extend(by_copy);
        }
    }
    tracing::trace!("copied");
    fill_by_read(child, remote, batch, fds.pages, &by_read)?;
    tracing::debug!("pages filled");
    // 4a. Transparent huge pages collapsed again, lazily freed pages freed again.
    super::pagestate::restore(child, remote, batch, mm)?;
    // 4b. AIO contexts, their rings at their addresses (the pages image is the file their
    // zero-length reads read).
    crate::files::aio::restore(child, remote, batch.table, mm, fds.pages)?;
    // 5. Final protections.
    let reprotect: Vec<&Vma> = mm
        .vmas
        .iter()
        .zip(&filled)
        .filter(|(vma, &fill)| {
            let sysv = vma.kind == VmaKind::SysvShm as i32;
            let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
            (vma.kind == VmaKind::AioRing as i32 && vma.prot != rw)
                || (fill && vma.prot & rw != rw)
                || sysv
        })
        .map(|(vma, _)| vma)
        .collect();
    let protects: Vec<BatchCall> = reprotect
        .iter()
        .map(|v| {
            (
                libc::SYS_mprotect,
                [v.start, v.end - v.start, v.prot as u64, 0, 0, 0],
            )
        })
        .collect();
    run_batch(child, remote, batch, &protects, |i| {
        format!("mprotect {:#x}", reprotect[i].start)
    })?;

    // 5b. The guard pages, before the mlocks (no guard goes in a locked VMA).
    super::guard::install(child, remote, batch, &mm.guards)?;

    // 6. The madvise and mlock state of each VMA (a call per advice: a range made of
    // several VMAs is split again where their flags differ), then mlockall(MCL_FUTURE)
    // for the mappings the process makes from now on.
    advise_and_lock(child, remote, batch, mm)?;
    // 6b. The names the process gave its anonymous memory.
    name_anon_vmas(child, remote, batch, mm)?;

    // 7. brk, arg/env, auxv, exe. The kernel refuses to change the exe link while the old
    // executable is mapped: when the image runs cryo's own binary, it is, and stays right.
    let exe_fd = if same_file(&proc::dir(child).join("exe"), fds.exe, child) {
        u64::MAX
    } else {
        fds.exe
    };
    set_mm_map(child, remote, batch.table, mm, exe_fd)?;
    let fds = fds.all();
    let closes: Vec<BatchCall> = fds
        .iter()
        .map(|&fd| (libc::SYS_close, [fd, 0, 0, 0, 0, 0]))
        .collect();
    run_batch(child, remote, batch, &closes, |i| {
        format!("close fd {}", fds[i])
    })?;
    Ok(())
}

/// Maps the VMAs the kernel had kept apart from the one before them (`apart`: each with
/// its protection and mmap flags) at addresses clear of everything, and moves each into
/// place with mremap: a moved VMA keeps the page offset of where it was made, which does not
/// follow its neighbour's, so the kernel does not merge them (a fresh mapping beside it would
/// be merged). Every other VMA is in place by now; the temporary addresses are a page apart,
/// so no two moved VMAs' offsets follow each other either.
fn map_apart(
    child: Pid,
    remote: &Remote,
    batch: BatchSite,
    keep: (u64, u64),
    mm: &MmCore,
    apart: &[(&Vma, u64, u64)],
) -> Result<()> {
    if apart.is_empty() {
        return Ok(());
    }
    let mut taken: Vec<std::ops::Range<u64>> = mm.vmas.iter().map(|v| v.start..v.end).collect();
    taken.push(keep.0..keep.1);
    let mut next = super::premap::STAGING_BASE;
    let mut calls: Vec<BatchCall> = Vec::with_capacity(5 * apart.len());
    // (VMA, step) of each call, and where each VMA's mremap is.
    let mut of_call: Vec<(usize, &str)> = Vec::with_capacity(5 * apart.len());
    let mut moves: Vec<usize> = Vec::with_capacity(apart.len());
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    for (i, &(vma, prot, flags)) in apart.iter().enumerate() {
        let len = vma.end - vma.start;
        let at = super::premap::place(next, len, vma.start, &taken).ok_or(
            MemoryError::NoStagingRoom {
                pid: child,
                start: vma.start,
            },
        )?;
        next = at + len + PAGE;
        // An anonymous VMA never written takes the page offset of where it is moved (to
        // merge there): one page written and dropped gives it its anon_vma, and it keeps the
        // offset of where it was made.
        let how = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        calls.push((libc::SYS_mmap, [at, len, prot | rw, flags, u64::MAX, 0]));
        of_call.push((i, "mmap"));
        calls.push((libc::SYS_madvise, [at, PAGE, MADV_POPULATE_WRITE, 0, 0, 0]));
        of_call.push((i, "write a page of"));
        calls.push((
            libc::SYS_madvise,
            [at, PAGE, libc::MADV_DONTNEED as u64, 0, 0, 0],
        ));
        of_call.push((i, "drop the page written in"));
        moves.push(calls.len());
        calls.push((libc::SYS_mremap, [at, len, len, how, vma.start, 0]));
        of_call.push((i, "move into place"));
        if prot | rw != prot {
            calls.push((libc::SYS_mprotect, [vma.start, len, prot, 0, 0, 0]));
            of_call.push((i, "mprotect"));
        }
    }
    let got = run_batch(child, remote, batch, &calls, |c| {
        let (i, what) = of_call[c];
        let vma = apart[i].0;
        format!(
            "{what} {:#x}-{:#x}, kept apart from the VMA before it",
            vma.start, vma.end
        )
    })?;
    for (&(vma, _, _), &c) in apart.iter().zip(&moves) {
        if got[c] != vma.start {
            return Err(MemoryError::Misplaced {
                pid: child,
                start: vma.start,
                at: got[c],
            }
            .into());
        }
    }
    Ok(())
}

/// Gives each VMA its madvise and mlock state again, and the mm its mlockall flags.
fn advise_and_lock(child: Pid, remote: &Remote, batch: BatchSite, mm: &MmCore) -> Result<()> {
    let mut calls: Vec<BatchCall> = Vec::new();
    let mut what: Vec<String> = Vec::new();
    for vma in &mm.vmas {
        let kind = VmaKind::try_from(vma.kind).unwrap_or(VmaKind::Invalid);
        if is_special(kind) {
            continue;
        }
        let len = vma.end - vma.start;
        for advice in super::vmflags::advice_of(vma.madvise) {
            calls.push((libc::SYS_madvise, [vma.start, len, advice as u64, 0, 0, 0]));
            what.push(format!("madvise {:#x} advice {advice}", vma.start));
        }
        if vma.mlock != 0 {
            let flags = if vma.mlock == super::vmflags::LOCKED_ON_FAULT {
                MLOCK_ONFAULT
            } else {
                0
            };
            calls.push((libc::SYS_mlock2, [vma.start, len, flags, 0, 0, 0]));
            what.push(format!("mlock {:#x}-{:#x}", vma.start, vma.end));
        }
    }
    if mm.mlockall != 0 {
        calls.push((libc::SYS_mlockall, [mm.mlockall as u64, 0, 0, 0, 0, 0]));
        what.push(format!("mlockall({:#x})", mm.mlockall));
    }
    run_batch(child, remote, batch, &calls, |i| what[i].clone())?;
    Ok(())
}

/// prctl(PR_SET_VMA) and its PR_SET_VMA_ANON_NAME (linux/prctl.h).
const PR_SET_VMA: u64 = 0x53564d41;
const PR_SET_VMA_ANON_NAME: u64 = 0;
/// ANON_VMA_NAME_MAX_LEN: a name with its NUL fits in this.
const ANON_NAME_SLOT: u64 = 80;

/// Names each anonymous VMA the process had named (PR_SET_VMA_ANON_NAME), as many per stop
/// as fit: the names go in the upper half of the scratch page, the batch table in the lower.
fn name_anon_vmas(child: Pid, remote: &Remote, batch: BatchSite, mm: &MmCore) -> Result<()> {
    let named: Vec<(&Vma, &str)> = mm
        .vmas
        .iter()
        .filter_map(|v| super::anon_name(v).map(|n| (v, n)))
        .collect();
    let half = batch.table_len / 2;
    let table = BatchSite {
        table_len: half,
        ..batch
    };
    let names_at = batch.table + half;
    let per_stop = (half / ANON_NAME_SLOT) as usize;
    for chunk in named.chunks(per_stop.max(1)) {
        let mut names = Vec::with_capacity(chunk.len() * ANON_NAME_SLOT as usize);
        let mut calls: Vec<BatchCall> = Vec::with_capacity(chunk.len());
        for (i, (vma, name)) in chunk.iter().enumerate() {
            if name.len() as u64 >= ANON_NAME_SLOT {
                return Err(MemoryError::AnonName {
                    pid: child,
                    start: vma.start,
                    name: name.to_string(),
                }
                .into());
            }
            let mut slot = name.as_bytes().to_vec();
            slot.resize(ANON_NAME_SLOT as usize, 0);
            names.extend_from_slice(&slot);
            let at = names_at + i as u64 * ANON_NAME_SLOT;
            let len = vma.end - vma.start;
            calls.push((
                libc::SYS_prctl,
                [PR_SET_VMA, PR_SET_VMA_ANON_NAME, vma.start, len, at, 0],
            ));
        }
        pt::write_mem(child, names_at, &names)
            .map_err(|e| Error::sys(child, "write the anonymous VMA names", e))?;
        run_batch(child, remote, table, &calls, |i| {
            format!(
                "name {:#x}-{:#x} {:?} (PR_SET_VMA_ANON_NAME)",
                chunk[i].0.start, chunk[i].0.end, chunk[i].1
            )
        })?;
    }
    Ok(())
}

/// Runs `calls` in the child in as few stops as its batch table allows; a failure is named
/// by `what` of the call that failed.
pub(crate) fn run_batch(
    child: Pid,
    remote: &Remote,
    batch: BatchSite,
    calls: &[BatchCall],
    what: impl Fn(usize) -> String,
) -> Result<Vec<u64>> {
    remote
        .batch(batch, calls)
        .map_err(|e| Error::sys(child, what(e.index), e.error))
}

/// Reads runs from the pages image, in the child (fd `pages_fd` there), populating the memory
/// first: a fault per page taken inside pread costs three times more. The first read of
/// every run goes in one batch; what a short read left is read one call at a time.
fn fill_by_read(
    child: Pid,
    remote: &Remote,
    batch: BatchSite,
    pages_fd: u64,
    runs: &[&PageRun],
) -> Result<()> {
    let sys = |op: String| move |e: std::io::Error| Error::sys(child, op, e);
    let mut calls: Vec<BatchCall> = Vec::with_capacity(2 * runs.len());
    // (run, whether the call is its read) per call, for errors and results.
    let mut of_call: Vec<(usize, bool)> = Vec::with_capacity(2 * runs.len());
    for (i, run) in runs.iter().enumerate() {
        let len = run.npages * PAGE;
        if len >= POPULATE_MIN {
            calls.push((
                libc::SYS_madvise,
                [run.addr, len, MADV_POPULATE_WRITE, 0, 0, 0],
            ));
            of_call.push((i, false));
        }
        calls.push((
            libc::SYS_pread64,
            [pages_fd, run.addr, len.min(IO_CHUNK), run.offset, 0, 0],
        ));
        of_call.push((i, true));
    }
    let results = run_batch(child, remote, batch, &calls, |c| {
        let (i, read) = of_call[c];
        if read {
            format!("fill {:#x} from the pages image", runs[i].addr)
        } else {
            format!("populate {:#x}", runs[i].addr)
        }
    })?;
    for (&(i, read), &n) in of_call.iter().zip(&results) {
        if !read {
            continue;
        }
        let run = runs[i];
        let len = run.npages * PAGE;
        if n == 0 {
            return Err(MemoryError::PagesShort {
                pid: child,
                addr: run.addr,
            }
            .into());
        }
        let mut done = n;
        while done < len {
            let n = remote
                .call(
                    libc::SYS_pread64,
                    &[
                        pages_fd,
                        run.addr + done,
                        (len - done).min(IO_CHUNK),
                        run.offset + done,
                    ],
                )
                .map_err(sys(format!(
                    "fill {:#x} (+{done}) from the pages image",
                    run.addr
                )))?;
            if n == 0 {
                return Err(MemoryError::PagesShort {
                    pid: child,
                    addr: run.addr,
                }
                .into());
            }
            done += n;
        }
    }
    Ok(())
}

/// Copies runs of anonymous memory into the child with UFFDIO_COPY from `src`, cryo's
/// mapping of the pages image. The userfaultfd is created in the child (it belongs to its
/// address space), taken with pidfd_getfd and closed there at once.
fn fill_by_copy(
    child: Pid,
    remote: &Remote,
    src: &[u8],
    vmas: &[Vma],
    runs: &[&PageRun],
) -> std::io::Result<()> {
    let target_fd = remote.call(libc::SYS_userfaultfd, &[libc::O_CLOEXEC as u64])?;
    let taken = crate::sys::pidfd::pidfd_open(child)
        .and_then(|pidfd| crate::sys::pidfd::pidfd_getfd(pidfd.as_fd(), target_fd as i32));
    remote.call(libc::SYS_close, &[target_fd])?;
    let uffd = Userfault::new(taken?)?;
    let mut regions: Vec<(u64, u64)> = Vec::new();
    for run in runs {
        if let Some(v) = vmas
            .iter()
            .find(|v| v.start <= run.addr && run.addr < v.end)
        {
            if regions.last() != Some(&(v.start, v.end)) {
                regions.push((v.start, v.end));
            }
        }
    }
    regions.dedup();
    for &(start, end) in &regions {
        uffd.register(start, end - start)?;
    }
    for run in runs {
        let from = run.offset as usize;
        let to = from + (run.npages * PAGE) as usize;
        let bytes = src
            .get(from..to)
            .ok_or_else(|| std::io::Error::other("page run outside the pages image"))?;
        uffd.copy(run.addr, bytes)?;
    }
    for &(start, end) in &regions {
        uffd.unregister(start, end - start)?;
    }
    // Dropping the last reference to the context releases any registration left behind.
    Ok(())
}

/// Moves [vvar], [vvar_vclock] and [vdso] of the child by the offset that puts them where the
/// image had them (their relative layout is the same on the same kernel); one the process had
/// unmapped (the image lacks it) is unmapped.
fn move_vdso(child: Pid, remote: &Remote, current: &[proc::MapEntry], image: &[Vma]) -> Result<()> {
    let mut moves = Vec::new();
    for kind in [VmaKind::Vvar, VmaKind::VvarVclock, VmaKind::Vdso] {
        let have = current.iter().find(|m| super::classify(m) == kind);
        let want = image.iter().find(|v| v.kind == kind as i32);
        match (have, want) {
            (None, None) => {}
            (Some(h), Some(w)) if h.len() == w.end - w.start => {
                moves.push((h.start, w.start, h.len()))
            }
            (Some(h), None) => {
                remote
                    .call(libc::SYS_munmap, &[h.start, h.len()])
                    .map_err(|e| {
                        Error::sys(
                            child,
                            format!("unmap {kind:?}, which the process had unmapped"),
                            e,
                        )
                    })?;
            }
            _ => return Err(MemoryError::VdsoDiffers { pid: child, kind }.into()),
        }
    }
    // Moving up: the highest first, so no move lands on a block not yet moved.
    if moves.iter().any(|(from, to, _)| to > from) {
        moves.reverse();
    }
    for (from, to, len) in moves {
        if from == to {
            continue;
        }
        remote
            .call(
                libc::SYS_mremap,
                &[
                    from,
                    len,
                    len,
                    (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                    to,
                ],
            )
            .map_err(|e| Error::sys(child, format!("move vdso block {from:#x} -> {to:#x}"), e))?;
    }
    Ok(())
}

/// Whether `link` and the child's fd `fd` are the same file.
fn same_file(link: &std::path::Path, fd: u64, child: Pid) -> bool {
    use std::os::unix::fs::MetadataExt;
    let a = std::fs::metadata(link);
    let b = std::fs::metadata(proc::dir(child).join(format!("fd/{fd}")));
    matches!((a, b), (Ok(a), Ok(b)) if a.dev() == b.dev() && a.ino() == b.ino())
}

pub(crate) fn set_mm_map(
    child: Pid,
    remote: &Remote,
    scratch: u64,
    mm: &MmCore,
    exe_fd: u64,
) -> Result<()> {
    // struct prctl_mm_map, then the auxv it points to.
    let auxv: Vec<u8> = mm.auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let auxv_addr = scratch + 128;
    let mut map = Vec::with_capacity(104);
    for w in [
        mm.start_code,
        mm.end_code,
        mm.start_data,
        mm.end_data,
        mm.start_brk,
        mm.brk,
        mm.start_stack,
        mm.arg_start,
        mm.arg_end,
        mm.env_start,
        mm.env_end,
        auxv_addr,
    ] {
        map.extend_from_slice(&w.to_ne_bytes());
    }
    map.extend_from_slice(&(auxv.len() as u32).to_ne_bytes());
    map.extend_from_slice(&(exe_fd as u32).to_ne_bytes()); // u64::MAX -> -1: keep
    let io = |e| Error::sys(child, "PR_SET_MM_MAP", e);
    pt::write_mem(child, scratch, &map).map_err(io)?;
    pt::write_mem(child, auxv_addr, &auxv).map_err(io)?;
    remote
        .call(
            libc::SYS_prctl,
            &[PR_SET_MM, PR_SET_MM_MAP, scratch, map.len() as u64, 0],
        )
        .map_err(io)?;
    Ok(())
}
