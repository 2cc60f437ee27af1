//! AIO contexts (io_setup): the ring (mapped as "/[aio] (deleted)", its address the context
//! id) is read whole at dump with its header checked; the restore makes a context with a ring
//! of the same size in the same slot of the mm's table, moves it to the dumped address
//! (mremap: the kernel follows and renames the context), completes zero-length reads until
//! the kernel's tail is the dumped one, and writes the ring (head, the io_events) back. The
//! completions the process had not reaped come back as they were, still unreaped, holding
//! their slots as before.
//!
//! The restore refuses, before anything is created, a ring this machine's io_setup cannot make
//! (rings are sized by the possible CPUs); `restore --check-only` says so too.
//!
//! Refused at dump: a ring whose context this process does not have (a child inherits its
//! parent's ring mapping across fork, not the context), a ring whose header is not the
//! kernel's, and a ring that took a completion while the dump ran (a request was in flight:
//! [`Watch`]). A request still in flight when the dump ends (an IOCB_CMD_POLL on a file that
//! never becomes ready) leaves no trace the kernel shows outside the context: see
//! docs/state-coverage.md.

use std::io;

use cryo_proto::image::{AioRing, MmCore, Vma, VmaKind};
use cryo_proto::sanity::{AioHeader, AIO_HEADER_LEN};
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::memory::PAGE;
use crate::proc::MapEntry;
use crate::remote::Remote;
use crate::sys::ptrace as pt;

/// Where the header's head and tail words are.
const HEAD_AT: u64 = 8;
const TAIL_AT: u64 = 12;
/// `struct iocb`'s size, and the offset of its fields cryo sets (linux/aio_abi.h, x86_64).
const IOCB_LEN: usize = 64;
const IOCB_OPCODE_AT: usize = 16;
const IOCB_FILDES_AT: usize = 20;
/// IOCB_CMD_PREAD.
const IOCB_CMD_PREAD: u16 = 0;

/// An AIO context that cannot be dumped or made again.
#[derive(Debug, thiserror::Error)]
pub enum AioError {
    /// The ring is mapped but the process has no context for it.
    #[error(
        "pid {pid}: AIO ring at {start:#x}: the process has no AIO context for it (a ring \
         mapping inherited across fork: the kernel gives a child the mapping, not the context); \
         unmap it in the child before the dump"
    )]
    NoContext {
        /// The process.
        pid: Pid,
        /// The ring's address.
        start: u64,
    },
    /// The ring is not as the kernel keeps it (the process wrote its header, or it is no ring).
    #[error("pid {pid}: AIO context (io_setup, its ring at {start:#x}): {detail}")]
    Unsound {
        /// The process.
        pid: Pid,
        /// The ring's address.
        start: u64,
        /// What is wrong.
        detail: String,
    },
    /// The ring took completions while the dump ran: requests were in flight.
    #[error(
        "pid {pid}: AIO context (io_setup, its ring at {start:#x}): {completed} request(s) \
         completed while the dump ran (tail {tail} then {now}): requests were in flight, which \
         a dump cannot keep; dump again once they are done"
    )]
    InFlight {
        /// The process.
        pid: Pid,
        /// The ring's address.
        start: u64,
        /// The tail the dump saved.
        tail: u32,
        /// The tail at the end of the dump.
        now: u32,
        /// How many completions arrived.
        completed: u32,
    },
    /// A step of reading or remaking the context failed.
    #[error("pid {pid}: AIO context (its ring at {start:#x}): {step}: {source}")]
    Step {
        /// The process.
        pid: Pid,
        /// The ring's address.
        start: u64,
        /// The step.
        step: String,
        /// The kernel's answer.
        source: io::Error,
    },
    /// This machine's io_setup cannot make a ring of the dumped size.
    #[error(
        "pid {pid}: AIO context (its ring at {start:#x}): {detail}: restore on a host with \
         fewer possible CPUs"
    )]
    Unmakeable {
        /// The process.
        pid: Pid,
        /// The ring's address.
        start: u64,
        /// The sizes.
        detail: String,
    },
    /// The remade context differs from the dumped one.
    #[error("pid {pid}: AIO context (its ring at {start:#x}): {detail}")]
    Remade {
        /// The process.
        pid: Pid,
        /// The ring's address.
        start: u64,
        /// How it differs.
        detail: String,
    },
}

/// Whether a VMA named `name` in /proc/PID/maps is an AIO ring.
pub(crate) fn is_ring(name: &str) -> bool {
    name.starts_with("/[aio]")
}

/// Reads the AIO ring `entry` of frozen task `pid` (through `remote`, which checks the
/// context is the process's own).
pub(crate) fn dump(pid: Pid, entry: &MapEntry, remote: &Remote) -> Result<AioRing, AioError> {
    let start = entry.start;
    let step = |what: &str| {
        let step = what.to_string();
        move |source| AioError::Step {
            pid,
            start,
            step,
            source,
        }
    };
    let unsound = |detail: String| AioError::Unsound { pid, start, detail };
    if !entry.shared || entry.pgoff != 0 {
        return Err(unsound(
            "the ring is mapped in part or privately (no mapping io_setup makes)".into(),
        ));
    }
    let mut ring = vec![0u8; (entry.end - start) as usize];
    pt::read_mem(pid, start, &mut ring).map_err(step("read the ring"))?;
    let header = AioHeader::parse(&ring).ok_or_else(|| unsound("shorter than its header".into()))?;
    if let Some(fault) = header.fault(ring.len() as u64) {
        return Err(unsound(fault));
    }
    // io_submit of no request: 0 on a context of this process, EINVAL on none (no side
    // effect either way).
    match remote.call(libc::SYS_io_submit, &[start, 0, 0]) {
        Ok(_) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            return Err(AioError::NoContext { pid, start })
        }
        Err(e) => return Err(step("io_submit of no request (is the context its own?)")(e)),
    }
    Ok(AioRing { start, ring })
}

/// The tails of the rings a dump saved, to see at its end whether a request completed
/// meanwhile: such a completion would be missing from the image.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    rings: Vec<(Pid, u64, u32)>,
}

impl Watch {
    /// Watches the rings of the address space `mm` of `pid`.
    pub(crate) fn add(&mut self, pid: Pid, mm: &MmCore) {
        for r in &mm.aio_rings {
            if let Some(h) = AioHeader::parse(&r.ring) {
                self.rings.push((pid, r.start, h.tail));
            }
        }
    }

    /// Refuses the dump if a watched ring's tail moved (its process still frozen).
    pub(crate) fn check(&self) -> Result<(), AioError> {
        for &(pid, start, tail) in &self.rings {
            let mut word = [0u8; 4];
            pt::read_mem(pid, start + TAIL_AT, &mut word).map_err(|source| AioError::Step {
                pid,
                start,
                step: "read the ring's tail again".into(),
                source,
            })?;
            let now = u32::from_ne_bytes(word);
            if now != tail {
                let mut nr = [0u8; 4];
                let _ = pt::read_mem(pid, start + 4, &mut nr);
                let nr = u64::from(u32::from_ne_bytes(nr).max(1));
                let completed = ((u64::from(now) + nr - u64::from(tail) % nr) % nr) as u32;
                return Err(AioError::InFlight {
                    pid,
                    start,
                    tail,
                    now,
                    completed,
                });
            }
        }
        Ok(())
    }
}

/// The io_setup argument that makes a ring of `len` bytes on this machine: the smallest, so
/// the context counts for as little of fs.aio-max-nr as the kernel allows. The kernel takes
/// max(n, 4 * possible CPUs) * 2 + 2 events, rounded up to whole pages.
fn setup_events(len: u64) -> u64 {
    let pages = len / PAGE;
    if pages <= 1 {
        1
    } else {
        64 * pages - 65
    }
}

/// The events of the ring io_setup(`n`) makes with `cpus` possible CPUs (fs/aio.c: max(n,
/// 4 * cpus) * 2 + 2 events, rounded up to whole pages, all of which it uses).
fn ring_events(n: u64, cpus: u64) -> u64 {
    let events = n.max(4 * cpus) * 2 + 2;
    let pages = (AIO_HEADER_LEN as u64 + AIO_HEADER_LEN as u64 * events).div_ceil(PAGE);
    (pages * PAGE - AIO_HEADER_LEN as u64) / AIO_HEADER_LEN as u64
}

/// How many CPUs a cpu list of /sys (`0-1`, `0,2-5`) names.
fn count_cpus(list: &str) -> Option<u64> {
    let mut n = 0;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<u64>().ok()? + 1 - a.parse::<u64>().ok()?,
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
    }
    Some(n)
}

/// The possible CPUs of this machine (the kernel sizes rings by them, not by online ones).
pub(crate) fn possible_cpus() -> Option<u64> {
    count_cpus(&std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?)
}

/// Why this machine's io_setup cannot make a ring of `nr` events (`None`: it can, or the
/// number of CPUs is unknown and io_setup will tell).
pub(crate) fn unmakeable_here(nr: u32) -> Option<String> {
    let cpus = possible_cpus()?;
    let len = (nr as u64 + 1) * AIO_HEADER_LEN as u64;
    let made = ring_events(setup_events(len), cpus);
    (made != nr as u64).then(|| {
        format!(
            "a ring of {nr} events, and io_setup here ({cpus} possible CPUs) makes none smaller \
             than {made}"
        )
    })
}

/// Refuses, before anything is created, an address space whose rings this machine cannot make.
pub(crate) fn check_host(pid: Pid, mm: &MmCore) -> Result<(), AioError> {
    for r in &mm.aio_rings {
        let Some(header) = AioHeader::parse(&r.ring) else {
            continue;
        };
        if let Some(detail) = unmakeable_here(header.nr) {
            return Err(AioError::Unmakeable {
                pid,
                start: r.start,
                detail,
            });
        }
    }
    Ok(())
}

/// A ring of the image with its header.
struct Wanted<'a> {
    vma: &'a Vma,
    ring: &'a [u8],
    header: AioHeader,
}

/// Makes the AIO contexts of `mm` again in stopped `child` (through `remote`, with the
/// writable page `scratch`), after its VMAs are mapped: each at its address, in its slot,
/// with its head, tail and io_events. `read_fd` is a regular file open for reading in the
/// child: the zero-length reads that move the kernel's tail read it.
pub(crate) fn restore(
    child: Pid,
    remote: &Remote,
    scratch: u64,
    mm: &MmCore,
    read_fd: u64,
) -> Result<(), AioError> {
    let mut wanted: Vec<Wanted<'_>> = Vec::with_capacity(mm.aio_rings.len());
    for r in &mm.aio_rings {
        // The load checked every ring (cryo_proto::sanity::check_mm).
        let vma = mm.vmas.iter().find(|v| {
            v.kind == VmaKind::AioRing as i32 && v.start == r.start
        });
        if let (Some(vma), Some(header)) = (vma, AioHeader::parse(&r.ring)) {
            wanted.push(Wanted {
                vma,
                ring: &r.ring,
                header,
            });
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    wanted.sort_by_key(|w| w.header.id);
    let call = |start: u64, what: &str, nr: i64, args: &[u64]| {
        remote.call(nr, args).map_err(|source| AioError::Step {
            pid: child,
            start,
            step: what.to_string(),
            source,
        })
    };
    // 1. Each ring's place held, so no new ring lands there before its own moves in.
    for w in &wanted {
        let (start, len) = (w.vma.start, w.vma.end - w.vma.start);
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE;
        let at = call(
            start,
            "hold the ring's place",
            libc::SYS_mmap,
            &[start, len, libc::PROT_NONE as u64, flags as u64, u64::MAX, 0],
        )?;
        if at != start {
            return Err(AioError::Remade {
                pid: child,
                start,
                detail: format!("its place was taken (mapped at {at:#x})"),
            });
        }
    }
    // 2. The contexts, in slot order: the kernel gives each the first free slot, so a slot
    // the image has no ring for gets a filler context, destroyed once all are made.
    let setup = |start: u64, events: u64| -> Result<(u64, AioHeader), AioError> {
        pt::write_mem(child, scratch, &0u64.to_ne_bytes()).map_err(|source| AioError::Step {
            pid: child,
            start,
            step: "write io_setup's argument".into(),
            source,
        })?;
        call(start, "io_setup", libc::SYS_io_setup, &[events, scratch])?;
        let mut ctx = [0u8; 8];
        pt::read_mem(child, scratch, &mut ctx).map_err(|source| AioError::Step {
            pid: child,
            start,
            step: "read io_setup's context".into(),
            source,
        })?;
        let ctx = u64::from_ne_bytes(ctx);
        let header = read_header(child, start, ctx)?;
        Ok((ctx, header))
    };
    let mut fillers = Vec::new();
    let last = wanted.last().map_or(0, |w| w.header.id);
    let mut next = wanted.iter().peekable();
    for slot in 0..=last {
        let Some(w) = next.next_if(|w| w.header.id == slot) else {
            let (ctx, header) = setup(0, 1)?;
            if header.id != slot {
                return Err(AioError::Remade {
                    pid: child,
                    start: 0,
                    detail: format!("a filler context took slot {} for {slot}", header.id),
                });
            }
            fillers.push(ctx);
            continue;
        };
        let (start, len) = (w.vma.start, w.vma.end - w.vma.start);
        let (ctx, header) = setup(start, setup_events(len))?;
        if header.id != slot || header.nr != w.header.nr {
            return Err(AioError::Remade {
                pid: child,
                start,
                detail: format!(
                    "io_setup made a ring of {} events in slot {} where the dump had {} in slot \
                     {slot} (a machine with other possible CPUs sizes rings otherwise)",
                    header.nr, header.id, w.header.nr
                ),
            });
        }
        let how = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
        let at = call(
            start,
            "move the ring to its address",
            libc::SYS_mremap,
            &[ctx, len, len, how, start],
        )?;
        if at != start {
            return Err(AioError::Remade {
                pid: child,
                start,
                detail: format!("the ring moved to {at:#x}"),
            });
        }
    }
    // 3. Each ring's tail, head and events.
    for w in &wanted {
        position(child, remote, scratch, w, read_fd)?;
        fill(child, w)?;
    }
    // 4. The fillers go (io_destroy unmaps their rings).
    for ctx in fillers {
        call(0, "io_destroy a filler context", libc::SYS_io_destroy, &[ctx])?;
    }
    Ok(())
}

/// The header of the ring at `at` in `child` (the image's ring at `start`).
fn read_header(child: Pid, start: u64, at: u64) -> Result<AioHeader, AioError> {
    let mut buf = [0u8; AIO_HEADER_LEN as usize];
    pt::read_mem(child, at, &mut buf).map_err(|source| AioError::Step {
        pid: child,
        start,
        step: format!("read the new ring's header at {at:#x}"),
        source,
    })?;
    AioHeader::parse(&buf).ok_or_else(|| AioError::Remade {
        pid: child,
        start,
        detail: "no header".into(),
    })
}

/// Moves the kernel's tail of the fresh ring `w` (at its address now) to the dumped tail,
/// by zero-length reads of `read_fd` that complete at once, and its head to the dumped head,
/// so the completions between them hold their slots as the dumped ones did. Going past the
/// head takes a full turn first (the kernel counts completions, not positions).
fn position(
    child: Pid,
    remote: &Remote,
    scratch: u64,
    w: &Wanted<'_>,
    read_fd: u64,
) -> Result<(), AioError> {
    let start = w.vma.start;
    let (head, tail, nr) = (w.header.head, w.header.tail, w.header.nr);
    if head == 0 && tail == 0 {
        return Ok(());
    }
    let step = |what: &str| {
        let step = what.to_string();
        move |source| AioError::Step {
            pid: child,
            start,
            step,
            source,
        }
    };
    let count = if tail < head { nr + tail } else { tail } as u64;
    // One iocb at `scratch`, the pointers to it after it.
    let room = (PAGE as usize - IOCB_LEN) / 8;
    let most = count.min(nr as u64 - 1).min(room as u64);
    let mut page = vec![0u8; IOCB_LEN + 8 * most as usize];
    page[IOCB_OPCODE_AT..IOCB_OPCODE_AT + 2].copy_from_slice(&IOCB_CMD_PREAD.to_ne_bytes());
    page[IOCB_FILDES_AT..IOCB_FILDES_AT + 4].copy_from_slice(&(read_fd as u32).to_ne_bytes());
    for p in page[IOCB_LEN..].chunks_mut(8) {
        p.copy_from_slice(&scratch.to_ne_bytes());
    }
    pt::write_mem(child, scratch, &page).map_err(step("write the iocbs"))?;
    let mut done = 0u64;
    while done < count {
        let n = (count - done).min(most);
        let got = remote
            .call(libc::SYS_io_submit, &[start, n, scratch + IOCB_LEN as u64])
            .map_err(step("io_submit zero-length reads"))?;
        if got == 0 {
            return Err(step("io_submit zero-length reads")(Errno::EAGAIN.into()));
        }
        done += got;
        // The process's reaping, as io_getevents would do it.
        let reaped = done.min(head as u64) as u32;
        pt::write_mem(child, start + HEAD_AT, &(reaped % nr).to_ne_bytes())
            .map_err(step("write the ring's head"))?;
    }
    Ok(())
}

/// Writes the dumped head and io_events into the ring `w` (its tail the dumped one now) and
/// checks its header reads as dumped.
fn fill(child: Pid, w: &Wanted<'_>) -> Result<(), AioError> {
    let start = w.vma.start;
    let now = read_header(child, start, start)?;
    if now.tail != w.header.tail {
        return Err(AioError::Remade {
            pid: child,
            start,
            detail: format!(
                "the kernel's tail is {} after the reads, not {}",
                now.tail, w.header.tail
            ),
        });
    }
    let step = |what: &'static str| {
        move |source| AioError::Step {
            pid: child,
            start,
            step: what.into(),
            source,
        }
    };
    let events = AIO_HEADER_LEN as usize;
    pt::write_mem(child, start + events as u64, &w.ring[events..])
        .map_err(step("write the io_events"))?;
    pt::write_mem(child, start + HEAD_AT, &w.header.head.to_ne_bytes())
        .map_err(step("write the ring's head"))?;
    let back = read_header(child, start, start)?;
    if back != w.header {
        return Err(AioError::Remade {
            pid: child,
            start,
            detail: format!("the ring's header reads {back:?}, dumped {:?}", w.header),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's ring size for io_setup(n) with `cpus` possible CPUs (fs/aio.c).
    fn ring_pages(n: u64, cpus: u64) -> u64 {
        (ring_events(n, cpus) + 1) * 32 / PAGE
    }

    #[test]
    fn cpu_lists_are_counted() {
        assert_eq!(count_cpus("0-1\n"), Some(2));
        assert_eq!(count_cpus("0"), Some(1));
        assert_eq!(count_cpus("0,2-5,7"), Some(6));
        assert_eq!(count_cpus("x"), None);
    }

    #[test]
    fn rings_are_sized_as_the_kernel_does() {
        // Measured here (2 possible CPUs): io_setup(8) and io_setup(1) make 127 events,
        // io_setup(100) 255.
        assert_eq!(ring_events(8, 2), 127);
        assert_eq!(ring_events(1, 2), 127);
        assert_eq!(ring_events(100, 2), 255);
        // 16 possible CPUs: no ring below 130 events, two pages.
        assert_eq!(ring_events(1, 16), 255);
    }

    #[test]
    fn setup_events_makes_the_ring_size_back() {
        for pages in 1..64 {
            for cpus in [1, 2, 4, 8] {
                let n = setup_events(pages * PAGE);
                assert_eq!(ring_pages(n, cpus), pages, "{pages} pages, {cpus} cpus");
                if n > 1 {
                    assert!(ring_pages(n - 1, cpus) < pages, "not the smallest");
                }
            }
        }
    }
}
