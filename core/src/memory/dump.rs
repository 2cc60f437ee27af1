//! Dumping an address space: VMAs from /proc/PID/maps, present pages from pagemap, written
//! into the pages image by the frozen task itself (pwrite issued in its own address space:
//! one copy), with /proc/PID/mem as the fallback for pages it cannot read. hugetlb VMAs are
//! told apart here, by their VmFlags (hugetlb.rs).

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cryo_proto::image::{MmCore, PageRun, RawFileRef, Vma, VmaKind};
use nix::unistd::Pid;
use tracing::{debug, debug_span};

use super::error::MemoryError;
use super::{classify, page_wanted, IO_CHUNK, PAGE};

/// Runs written by one pwritev of the task: their iovecs fill the scratch page below its code.
const MAX_IOVECS: usize = 240;

const MAP_SHARED: u32 = libc::MAP_SHARED as u32;
use crate::error::{Error, Result};
use crate::files::FileTable;
use crate::image::{names, ImageDir};
use crate::proc::{self, MapEntry, Stat};
use crate::remote::{Remote, Scratch};

/// pagemap entries read per pread.
const PAGEMAP_CHUNK: usize = 64 * 1024;
/// The checksum thread's read-back buffer: well inside L2, so the crc reads cached bytes.
const CHECKSUM_BUF: usize = 256 << 10;

/// What /proc tells of a frozen task's VMAs at the cost of a walk of its page tables (tens of
/// milliseconds for a process of a GiB): smaps' VmFlags and page counts, read on a thread of
/// its own beside the pre-copy's last scan (a second walk) and the task's state, so that
/// they overlap instead of adding up in the downtime.
#[derive(Debug, Default)]
pub struct VmaViews {
    /// VmFlags codes by VMA start.
    flags: std::collections::HashMap<u64, Vec<String>>,
    /// What smaps counts of the VMAs with huge or lazily freed pages, by VMA start.
    usage: std::collections::HashMap<u64, super::vmflags::Usage>,
}

impl VmaViews {
    /// Reads the views of `pid` (frozen, its scratch page mapped: smaps tells the mm's
    /// default flags by it) and runs `beside`; with `overlap` (a pre-copy's last scan to run
    /// beside), the views on a thread while this one runs `beside`, returning when both are
    /// done (the thread is joined: the caller is single-threaded again). Without, one after
    /// the other: a thread's start costs a small process more than its walk.
    pub fn read_beside<T>(
        pid: Pid,
        overlap: bool,
        beside: impl FnOnce() -> T,
    ) -> (Result<Self>, T) {
        let read = move || {
            super::vmflags::read_with_usage(pid).map(|(flags, usage)| Self { flags, usage })
        };
        if !overlap {
            return (read(), beside());
        }
        std::thread::scope(|scope| {
            let views = scope.spawn(read);
            let got = beside();
            // A reader that panicked is a failed read (its panic was printed).
            let views = views.join().unwrap_or_else(|_| {
                Err(Error::sys(
                    pid,
                    "read /proc",
                    std::io::Error::other("reader panicked"),
                ))
            });
            (views, got)
        })
    }
}

/// Dumps the address space of frozen task `pid`. `maps` must not include `scratch`. With
/// `pages` false (`dump --check-only`) the page runs are found but no page is written; the
/// pages in `earlier` (sent by a pre-copy round, unchanged since) are not written either but
/// listed in `MmCore.precopied`, for the receiver to merge.
#[allow(clippy::too_many_arguments)]
pub fn dump(
    pid: Pid,
    stat: &Stat,
    maps: &[MapEntry],
    files: &mut FileTable,
    images: &ImageDir,
    remote: &Remote,
    scratch: &Scratch,
    pages: bool,
    earlier: Option<&super::precopy::Earlier>,
    views: VmaViews,
) -> Result<MmCore> {
    let _span = debug_span!("memory", %pid).entered();
    let mut vmas = Vec::with_capacity(maps.len());
    let mut aio_rings = Vec::new();
    // The flags only smaps shows: whether a shared mapping without write permission may get
    // it back, the madvise and mlock state of each VMA, and (on the scratch page, mapped
    // fresh) the mm's default flags.
    let VmaViews { mut flags, usage } = views;
    let policies = super::numa::policies(
        pid,
        remote,
        scratch,
        &maps
            .iter()
            .filter(|m| classify(m) != VmaKind::Vsyscall)
            .map(|m| m.start)
            .collect::<Vec<_>>(),
    )?;
    // The pre-copy's own registrations (closed once the images are out) are not the
    // process's: their "uw" is no state of its own.
    if let Some(earlier) = earlier {
        for m in maps {
            if earlier.tracks(m.start, m.end) {
                if let Some(codes) = flags.get_mut(&m.start) {
                    codes.retain(|c| c != "uw");
                }
            }
        }
    }
    let fresh = flags
        .iter()
        .find(|(start, _)| scratch.contains(**start))
        .map(|(_, f)| f);
    let (mlockall, merge_any) = super::vmflags::mm_defaults(fresh);
    if merge_any {
        return Err(MemoryError::MergeAny { pid }.into());
    }
    for entry in maps {
        let kind = classify(entry);
        if kind == VmaKind::Vsyscall {
            continue;
        }
        if kind == VmaKind::AioRing {
            aio_rings.push(crate::files::aio::dump(pid, entry, remote)?);
        }
        // Its file is the segment's, on the kernel's own shm mount (no device of its own):
        // dumped as a deleted file it would come back a copy, cut off from the segment.
        if kind == VmaKind::FilePrivate && entry.dev.0 == 0 && entry.name.starts_with("/SYSV") {
            return Err(MemoryError::PrivateSysvShm {
                pid,
                start: entry.start,
                end: entry.end,
                name: entry.name.clone(),
            }
            .into());
        }
        let vm_flags = flags.get(&entry.start);
        if let Some((flag, what)) = super::vmflags::unrestorable(vm_flags) {
            return Err(MemoryError::UnrestorableFlag {
                pid,
                start: entry.start,
                end: entry.end,
                name: entry.name.clone(),
                flag,
                what,
            }
            .into());
        }
        if let Some(policy) = policies.get(&entry.start) {
            return Err(MemoryError::NumaPolicy {
                pid,
                start: entry.start,
                end: entry.end,
                name: entry.name.clone(),
                policy: policy.clone(),
            }
            .into());
        }
        let link = || proc::dir(pid).join(format!("map_files/{:x}-{:x}", entry.start, entry.end));
        // hugetlb memory (VmFlags "ht"): its huge page size (that of its hugetlbfs inode),
        // and what it comes back as (anonymous hugetlb memory is named like a file).
        let (kind, hugetlb_page_size) = if super::vmflags::hugetlb(vm_flags) {
            let page = super::hugetlb::page_size_at(&link())
                .map_err(|e| Error::sys(pid, format!("statfs {}", link().display()), e))?
                .ok_or_else(|| MemoryError::Hugetlb {
                    pid,
                    start: entry.start,
                    end: entry.end,
                    name: entry.name.clone(),
                    why: "its file is not on hugetlbfs (not supported)",
                })?;
            (super::hugetlb::vma_kind(pid, entry, kind)?, page)
        } else {
            (kind, 0)
        };
        // Files, memfds and shared anonymous memory are recorded once per inode, however many
        // VMAs (of however many processes) map them.
        let mut sysv_shmid = 0;
        let file_id = match kind {
            // Shared anonymous memory mapped again MAP_PRIVATE (through its map_files link):
            // a private mapping of that object, not of a file named /dev/zero.
            VmaKind::FilePrivate if is_shmem_anon_name(&entry.name) => {
                files.add_shmem(pid, &link(), images)?
            }
            VmaKind::FilePrivate | VmaKind::FileShared => {
                files.add_mapped_file(pid, &link(), images)?
            }
            VmaKind::ShmemAnon => files.add_shmem(pid, &link(), images)?,
            VmaKind::PacketRing => {
                files.add_packet_ring(pid, &link(), entry.end - entry.start, entry.pgoff)?
            }
            VmaKind::SysvShm => {
                let (id, shmid) = crate::ipc::shm::dump_attachment(pid, entry, files, images)?;
                sysv_shmid = shmid;
                id
            }
            _ => 0,
        };
        let mut map_flags = if entry.shared {
            libc::MAP_SHARED as u32
        } else if super::vmflags::droppable(vm_flags) {
            super::MAP_DROPPABLE
        } else {
            libc::MAP_PRIVATE as u32
        };
        // The stack, and any other VMA mapped with MAP_GROWSDOWN: it grows on a fault below.
        if kind == VmaKind::Stack || super::vmflags::grows_down(vm_flags) {
            map_flags |= libc::MAP_GROWSDOWN as u32;
        }
        // Mapped with MAP_NORESERVE (VmFlags nr): no commit charge, as before.
        // A shared one too when hugetlb: it reserved no huge pages.
        if super::vmflags::no_reserve(vm_flags) && (!entry.shared || hugetlb_page_size != 0) {
            map_flags |= libc::MAP_NORESERVE as u32;
        }
        vmas.push(Vma {
            start: entry.start,
            end: entry.end,
            prot: entry.prot,
            map_flags,
            kind: kind as i32,
            pgoff: entry.pgoff,
            file_id,
            name: entry.name.clone(),
            madvise: super::vmflags::advised(vm_flags),
            mlock: super::vmflags::mlock(vm_flags),
            sysv_shmid,
            hugetlb_page_size,
            may_write: entry.shared
                && (entry.prot & libc::PROT_WRITE as u32 != 0
                    || super::vmflags::may_write(vm_flags)),
            file_writable: if entry.shared {
                super::vmflags::shared_writable(vm_flags)
            } else {
                kind == VmaKind::FilePrivate && opened_for_writing(&link())
            },
            apart: false,
        });
    }
    mark_apart(&mut vmas);

    tracing::trace!("vmas classified");
    crate::ipc::shm::check_pieces(pid, &vmas, files)?;
    let guards = super::guard::find(pid, &vmas)?;
    let runs = page_runs_known(pid, &vmas, earlier.map_or(&[][..], |e| &e.pages[..]))?;
    tracing::trace!("pagemap read");
    let (runs, precopied) = match earlier {
        Some(earlier) => super::precopy::split_runs(runs, &earlier.pages),
        None => (runs, Vec::new()),
    };
    let huge_pages = super::pagestate::huge_pages(pid, &vmas, &usage)?;
    let lazy_free = super::pagestate::lazy_free(pid, &vmas, &usage, &runs)?;
    let total: u64 = runs.iter().map(|r| r.npages * PAGE).sum();
    let pages_file = if pages {
        let name = names::pages(pid);
        let file = images.create_raw(&name)?;
        let crc = write_and_checksum(pid, images, &name, &file, total, |written| {
            write_pages(
                pid, images, &name, &file, &runs, &vmas, remote, scratch, written,
            )
        })?;
        debug!(runs = runs.len(), bytes = total, "pages written");
        Some(RawFileRef {
            name,
            size: total,
            crc32c: crc,
        })
    } else {
        None
    };

    let brk = remote
        .call(libc::SYS_brk, &[0])
        .map_err(|e| Error::sys(pid, "brk(0)", e))?;
    let exe_file_id = files.add_mapped_file(pid, &proc::dir(pid).join("exe"), images)?;
    Ok(MmCore {
        pid: pid.as_raw(),
        exe_file_id,
        vmas,
        pages: runs,
        precopied,
        aio_rings,
        mlockall,
        guards,
        huge_pages,
        lazy_free,
        pages_file,
        ..mm_layout(stat, brk, proc::auxv(pid)?)
    })
}

/// Whether a maps name is that of shared anonymous memory (MAP_SHARED|MAP_ANONYMOUS), whose
/// object the kernel names a deleted /dev/zero.
fn is_shmem_anon_name(name: &str) -> bool {
    name == "/dev/zero (deleted)"
}

/// Marks each private anonymous VMA that begins where the one before it ends and would
/// merge with it if both were mapped fresh (same protection, flags, advice, lock and name):
/// the kernel kept them apart (an area moved by mremap keeps its page offset, which then does
/// not follow its neighbour's), so the restore must too.
fn mark_apart(vmas: &mut [Vma]) {
    let plain = |v: &Vma| {
        matches!(VmaKind::try_from(v.kind), Ok(VmaKind::Anon | VmaKind::Heap))
            && v.map_flags & (MAP_SHARED | libc::MAP_GROWSDOWN as u32) == 0
            && v.hugetlb_page_size == 0
            && !super::is_droppable(v)
    };
    for i in 1..vmas.len() {
        let (prev, v) = (&vmas[i - 1], &vmas[i]);
        vmas[i].apart = plain(prev)
            && plain(v)
            && prev.end == v.start
            && prev.prot == v.prot
            && prev.map_flags == v.map_flags
            && prev.madvise == v.madvise
            && prev.mlock == v.mlock
            && super::anon_name(prev) == super::anon_name(v);
    }
}

/// The address-space layout PR_SET_MM_MAP takes, from `/proc/PID/stat`, the current break
/// and the auxiliary vector.
pub(crate) fn mm_layout(stat: &Stat, brk: u64, auxv: Vec<u64>) -> MmCore {
    MmCore {
        start_code: stat.start_code,
        end_code: stat.end_code,
        start_data: stat.start_data,
        end_data: stat.end_data,
        start_brk: stat.start_brk,
        brk,
        start_stack: stat.start_stack,
        arg_start: stat.arg_start,
        arg_end: stat.arg_end,
        env_start: stat.env_start,
        env_end: stat.env_end,
        auxv,
        ..MmCore::default()
    }
}

/// The runs of pages to keep, in address order, with their offsets in the pages file.
pub(crate) fn page_runs(pid: Pid, vmas: &[Vma]) -> Result<Vec<PageRun>> {
    page_runs_known(pid, vmas, &[])
}

/// [`page_runs`], where the pages in `known` (sorted, disjoint ranges) are known to be kept
/// without reading their pagemap entries: a pre-copy's pages sent and not written since
/// (present or swapped anonymous pages of tracked VMAs: each one [`page_wanted`] keeps). A
/// run never spans the edge of a known range; [`super::precopy::split_runs`] splits there
/// anyway. For a process of a GiB that a pre-copy sent, this reads the pagemap of the few
/// pages written since instead of every page's, in the downtime.
pub(crate) fn page_runs_known(
    pid: Pid,
    vmas: &[Vma],
    known: &[(u64, u64)],
) -> Result<Vec<PageRun>> {
    let pagemap = File::open(proc::dir(pid).join("pagemap"))
        .map_err(|e| Error::sys(pid, "open pagemap", e))?;
    let mut runs: Vec<PageRun> = Vec::new();
    let mut offset = 0u64;
    let mut buf = vec![0u8; PAGEMAP_CHUNK * 8];
    let mut k = 0;
    for vma in vmas {
        let kind = VmaKind::try_from(vma.kind).unwrap_or(VmaKind::Invalid);
        // Droppable memory is not kept: the kernel may free its pages at any time (its users
        // read zeroes then), and a restore is such a time, as with CRIU (zdtm maps11).
        let private_ring = kind == VmaKind::PacketRing && vma.map_flags & MAP_SHARED == 0;
        if !(matches!(
            kind,
            VmaKind::Anon | VmaKind::Heap | VmaKind::Stack | VmaKind::FilePrivate
        ) || private_ring)
            || super::is_droppable(vma)
        {
            continue;
        }
        // The VMA in pieces: those in a known range taken whole, the others read.
        let mut at = vma.start;
        while at < vma.end {
            while k < known.len() && known[k].1 <= at {
                k += 1;
            }
            match known.get(k) {
                Some(&(s, e)) if s <= at => {
                    let to = e.min(vma.end);
                    let npages = (to - at) / PAGE;
                    runs.push(PageRun {
                        addr: at,
                        npages,
                        offset,
                    });
                    offset += npages * PAGE;
                    at = to;
                }
                next => {
                    let to = next.map_or(vma.end, |&(s, _)| s.min(vma.end));
                    read_runs(
                        pid,
                        &pagemap,
                        &mut buf,
                        kind,
                        (at, to),
                        &mut runs,
                        &mut offset,
                    )?;
                    at = to;
                }
            }
        }
    }
    Ok(runs)
}

/// Appends to `runs` the runs of pages to keep in `from..to` (inside one VMA of `kind`) as
/// the pagemap tells them, from `offset` in the pages file on.
fn read_runs(
    pid: Pid,
    pagemap: &File,
    buf: &mut [u8],
    kind: VmaKind,
    (from, to): (u64, u64),
    runs: &mut Vec<PageRun>,
    offset: &mut u64,
) -> Result<()> {
    let mut page = from / PAGE;
    let end = to / PAGE;
    // A run never spans two VMAs (each is filled on its own at restore), nor two pieces.
    let mut open_run = false;
    while page < end {
        let n = ((end - page) as usize).min(PAGEMAP_CHUNK);
        let bytes = &mut buf[..n * 8];
        pagemap
            .read_exact_at(bytes, page * 8)
            .map_err(|e| Error::sys(pid, format!("read pagemap at {:#x}", page * PAGE), e))?;
        for (i, pm) in bytes.chunks_exact(8).enumerate() {
            let pm = u64::from_le_bytes(pm.try_into().unwrap_or([0; 8]));
            let addr = (page + i as u64) * PAGE;
            if page_wanted(kind, pm) {
                match runs.last_mut() {
                    Some(run) if open_run && run.addr + run.npages * PAGE == addr => {
                        run.npages += 1
                    }
                    _ => runs.push(PageRun {
                        addr,
                        npages: 1,
                        offset: *offset,
                    }),
                }
                open_run = true;
                *offset += PAGE;
            } else {
                open_run = false;
            }
        }
        page += n as u64;
    }
    Ok(())
}

/// Runs `write` (which reports each range it finished, in file order) while a second thread
/// checksums the ranges already written: the crc costs nothing on top of the writing.
fn write_and_checksum(
    pid: Pid,
    images: &ImageDir,
    name: &str,
    file: &File,
    total: u64,
    write: impl FnOnce(&dyn Fn(u64, u64)) -> Result<()>,
) -> Result<u32> {
    let io = |e| {
        Error::sys(
            pid,
            format!("pages image {}", images.file(name).display()),
            e,
        )
    };
    /// Below this, a second thread costs more than the checksum it overlaps.
    const OVERLAP_MIN: u64 = 16 << 20;
    if total < OVERLAP_MIN {
        write(&|_, _| {})?;
        return crate::image::crc_of_file(file, total).map_err(io);
    }
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::channel::<(u64, u64)>();
        // Read back through a small buffer rather than a mapping of the file: the crc then
        // runs on bytes hot in cache, and no page fault per page competes with the writer.
        let worker = scope.spawn(move || -> std::io::Result<u32> {
            let mut buf = vec![0u8; CHECKSUM_BUF];
            let mut crc = 0u32;
            for (off, len) in rx {
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(CHECKSUM_BUF as u64) as usize;
                    file.read_exact_at(&mut buf[..n], off + done)?;
                    crc = crc32c::crc32c_append(crc, &buf[..n]);
                    done += n as u64;
                }
            }
            Ok(crc)
        });
        let written = write(&|off, len| {
            let _ = tx.send((off, len));
        });
        drop(tx);
        let crc = worker
            .join()
            .map_err(|_| Error::target(pid, "the checksum thread panicked"));
        written?;
        crc?.map_err(io)
    })
}

/// Writes every run into the pages file: the task writes its own memory (one copy);
/// runs it cannot read (no PROT_READ) are copied through /proc/PID/mem instead.
#[allow(clippy::too_many_arguments)]
fn write_pages(
    pid: Pid,
    images: &ImageDir,
    name: &str,
    file: &File,
    runs: &[PageRun],
    vmas: &[Vma],
    remote: &Remote,
    scratch: &Scratch,
    written: &dyn Fn(u64, u64),
) -> Result<()> {
    if runs.is_empty() {
        return Ok(());
    }
    let path = images.file(name);
    let remote_fd = open_in_task(&path, remote, scratch);
    tracing::trace!("opened in task");
    if let Err(e) = &remote_fd {
        debug!("the task cannot open its pages image ({e}); copying through /proc/{pid}/mem");
    }
    // Whether the task can write each run itself (it can read its pages).
    let mut vma_idx = 0;
    let readable: Vec<bool> = runs
        .iter()
        .map(|run| {
            while vmas[vma_idx].end <= run.addr {
                vma_idx += 1;
            }
            vmas[vma_idx].prot & libc::PROT_READ as u32 != 0
        })
        .collect();
    // One run from byte `from` on (bytes before it written and reported): by the task,
    // else (and from where the task failed) through /proc/PID/mem.
    let write_run = |run: &PageRun, readable: bool, from: u64| -> Result<()> {
        let mut reported = from;
        let done = match (&remote_fd, readable) {
            (Ok(fd), true) => remote_write(remote, *fd, run, &mut reported, written).is_ok(),
            _ => false,
        };
        if !done {
            copy_through_mem(pid, file, run, reported)
                .map_err(|e| Error::sys(pid, format!("write pages to {}", path.display()), e))?;
            written(run.offset + reported, run.npages * PAGE - reported);
        }
        Ok(())
    };
    // Whatever happens (a full disk, say), the task closes its fd on the pages image: a
    // failed dump leaves it as it was, and the deleted image takes no space.
    let result = (|| -> Result<()> {
        // Runs the task can write that follow each other in the pages file go in one
        // pwritev of up to a chunk (its iovecs in the scratch page): one call of the task for
        // many runs, where a pwrite each cost two ptrace stops apiece (7 ms of a frozen redis
        // for 60 runs). The large ones go chunk by chunk. Either way the checksum hears of
        // every chunk's worth as soon as it is written.
        let batchable = |k: usize| remote_fd.is_ok() && readable[k];
        let mut next = 0;
        while next < runs.len() {
            let (mut end, mut bytes) = (next, 0);
            while end < runs.len()
                && end - next < MAX_IOVECS
                && batchable(end)
                && bytes + runs[end].npages * PAGE <= IO_CHUNK
                && runs[end].offset == runs[next].offset + bytes
            {
                bytes += runs[end].npages * PAGE;
                end += 1;
            }
            let (Ok(fd), true) = (&remote_fd, end > next + 1) else {
                write_run(&runs[next], readable[next], 0)?;
                next += 1;
                continue;
            };
            let iovecs: Vec<u8> = runs[next..end]
                .iter()
                .flat_map(|r| [r.addr, r.npages * PAGE])
                .flat_map(u64::to_ne_bytes)
                .collect();
            // A failed call wrote nothing we count on: each run again on its own.
            let mut left = scratch
                .write(remote, 0, &iovecs)
                .and_then(|iov| {
                    let n = (end - next) as u64;
                    remote.call(libc::SYS_pwritev, &[*fd, iov, n, runs[next].offset, 0, 0])
                })
                .unwrap_or(0);
            for run in &runs[next..end] {
                let n = left.min(run.npages * PAGE);
                left -= n;
                if n > 0 {
                    written(run.offset, n);
                }
                if n < run.npages * PAGE {
                    write_run(run, true, n)?;
                }
            }
            next = end;
        }
        Ok(())
    })();
    if let Ok(fd) = remote_fd {
        let closed = remote.call(libc::SYS_close, &[fd]);
        result?;
        closed.map_err(|e| Error::sys(pid, "close the pages image in the task", e))?;
        return Ok(());
    }
    result
}

fn open_in_task(path: &Path, remote: &Remote, scratch: &Scratch) -> std::io::Result<u64> {
    let path = std::fs::canonicalize(path)?;
    let mut bytes = path.as_os_str().as_bytes().to_vec();
    bytes.push(0);
    if bytes.len() as u64 > Scratch::LEN {
        return Err(std::io::Error::other("path too long for the scratch page"));
    }
    let addr = scratch.write(remote, 0, &bytes)?;
    remote.call(
        libc::SYS_openat,
        &[
            libc::AT_FDCWD as u64,
            addr,
            (libc::O_WRONLY | libc::O_CLOEXEC) as u64,
        ],
    )
}

/// The task writes `run` into its pages image; each chunk is reported to `written` once done,
/// and `reported` says how far that got if the task fails (the fallback goes on from there).
fn remote_write(
    remote: &Remote,
    fd: u64,
    run: &PageRun,
    reported: &mut u64,
    written: &dyn Fn(u64, u64),
) -> std::io::Result<()> {
    let mut done = *reported;
    let len = run.npages * PAGE;
    while done < len {
        let n = remote.call(
            libc::SYS_pwrite64,
            &[
                fd,
                run.addr + done,
                (len - done).min(IO_CHUNK),
                run.offset + done,
            ],
        )?;
        if n == 0 {
            return Err(std::io::Error::other("pwrite wrote nothing"));
        }
        done += n;
        written(run.offset + *reported, done - *reported);
        *reported = done;
    }
    Ok(())
}

/// Copies `run` from byte `from` on through /proc/PID/mem (also pages the task cannot read).
fn copy_through_mem(pid: Pid, file: &File, run: &PageRun, from: u64) -> std::io::Result<()> {
    let mem = File::open(proc::dir(pid).join("mem"))?;
    let mut buf = vec![0u8; (run.npages * PAGE).min(8 << 20) as usize];
    let len = run.npages * PAGE;
    let mut done = from;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        mem.read_exact_at(&mut buf[..n], run.addr + done)?;
        file.write_all_at(&buf[..n], run.offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Whether the file a private file mapping maps was opened for writing: its map_files link's
/// mode shows the mapping's file's FMODE_READ and FMODE_WRITE as owner read and write (the
/// only place they show for a private mapping: VmFlags "mw" is set for every one). A reader of
/// /proc/PID/map_files sees it, and zdtm's comparison of the maps before and after checks it.
fn opened_for_writing(link: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(link).is_ok_and(|m| m.permissions().mode() & 0o200 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::mmap::Mapping;

    /// Reading the pagemap around known pages finds what reading all of it finds, once a
    /// pre-copy's split is made: the same runs to write (with the same offsets), the same
    /// pages listed as sent before.
    #[test]
    fn known_pages_skip_the_pagemap_and_split_the_same() {
        let pages = 64u64;
        let mut map = Mapping::anonymous((pages * PAGE) as usize, false).unwrap();
        let touched = [0..10u64, 20..30, 40..41, 50..64];
        for r in touched.iter().cloned() {
            for p in r {
                map.write_at((p * PAGE) as usize, &[1]).unwrap();
            }
        }
        let at = |p: u64| map.start() + p * PAGE;
        let vma = Vma {
            start: at(0),
            end: at(pages),
            kind: VmaKind::Anon as i32,
            ..Vma::default()
        };
        // Known: inside a run, a whole run, the end of the VMA.
        let known = [(at(2), at(8)), (at(20), at(30)), (at(55), at(64))];
        let me = nix::unistd::getpid();
        let all = page_runs(me, std::slice::from_ref(&vma)).unwrap();
        let some = page_runs_known(me, std::slice::from_ref(&vma), &known).unwrap();
        let split = |runs| super::super::precopy::split_runs(runs, &known);
        assert_eq!(split(all), split(some));
    }
}
