//! System V shared memory segments: dumped once per segment a process of the dump attaches,
//! made again (or found again) by cryo before the tree is forked, attached by each process
//! with shmat at its dumped address while it is reshaped.
//!
//! ```text
//! dump     a "/SYSV<key>" line of /proc/PID/maps (its inode number is the shmid): the row of
//!          /proc/sysvipc/shm (key, perms, size, owners, creator, ctime), the contents read
//!          through /proc/PID/map_files, sparse, once per segment (files.img: SysvShm)
//!          (of the process's IPC namespace, listed by a thread that joins it when not
//!          cryo's; the maps name's key must be that segment's)
//!          (a hugetlb segment, SHM_HUGETLB: its huge pages holding other than zeros, as
//!          memory/hugetlb.rs saves shared hugetlb memory)
//!          refused: a partial attachment, a segment of another namespace than the process's
//! restore  validate: the segment's id and key are free here, or hold this very segment
//!          cryo: the very segment is still there (a dump kills its targets, not their
//!          segments; --leave-running): it is reattached as it is, contents untouched;
//!          else shm_next_id = id, shmget(key, IPC_CREAT|IPC_EXCL [|SHM_HUGETLB]) as cuid/cgid,
//!          IPC_SET uid, gid, mode, SHM_LOCK, the contents written through a short attach
//!          each process: shmat(id, start, SHM_RDONLY if read-only) by a remote call
//!          before it runs: IPC_RMID of a segment that was marked destroyed
//! ```
//!
//! Not restorable (the kernel sets them, no call changes them): the creator and last pids,
//! the attach, detach and change times of a segment made again.

use std::fs::File;

use cryo_proto::image::{file_desc::Kind, FileDesc, SysvShm, Vma, VmaKind};
use nix::unistd::Pid;
use tracing::debug;

use super::{Fate, IpcError, Listed, ObjectKind};
use crate::files::kind::{Checking, Dumping, FileKind, Opened, Opening};
use crate::files::{FileError, FileTable};
use crate::image::ImageDir;
use crate::memory::PAGE;
use crate::proc::MapEntry;
use crate::sys;

/// SHM_DEST and SHM_LOCKED in a segment's mode (/proc/sysvipc/shm perms).
const SHM_DEST: i64 = 0o1000;
const SHM_LOCKED: i64 = 0o2000;
/// shmat flags.
const SHM_RDONLY: u64 = 0o10000;
const SHM_EXEC: u64 = 0o100000;

/// The segments of a dump, as descriptions of files.img mapped by the processes' VMAs.
pub(crate) struct Segments;

impl FileKind for Segments {
    type Record = SysvShm;

    fn record(kind: &Kind) -> Option<&SysvShm> {
        match kind {
            Kind::SysvShm(s) => Some(s),
            _ => None,
        }
    }

    fn claims(&self, _fd: &Dumping<'_>) -> bool {
        false
    }

    fn dump(&self, fd: &mut Dumping<'_>) -> Result<Kind, FileError> {
        Err(fd
            .open
            .refuse("a SysV shared memory segment held by an fd", false))
    }

    fn validate(
        &self,
        desc: &FileDesc,
        s: &SysvShm,
        cx: &mut Checking<'_>,
    ) -> Result<(), FileError> {
        let raw = s.contents.as_ref().ok_or_else(|| FileError::Invalid {
            id: desc.id,
            detail: format!("{} without a contents image", describe(s)),
        })?;
        crate::files::shmem::check_extents(desc, s.size, raw, &s.extents, cx.images)?;
        // One of another IPC namespace goes into a new one, where nothing holds its id.
        if s.ipc_ns == 0 {
            fate(s, &live()?)?;
        }
        Ok(())
    }

    fn open(
        &self,
        desc: &FileDesc,
        s: &SysvShm,
        _cx: &mut Opening<'_>,
    ) -> Result<Opened, FileError> {
        Err(FileError::Invalid {
            id: desc.id,
            detail: format!("{} is attached, never held by an fd", describe(s)),
        })
    }

    fn describe(&self, _desc: &FileDesc, s: &SysvShm) -> String {
        describe(s)
    }
}

/// A segment in words, for messages.
fn describe(s: &SysvShm) -> String {
    format!(
        "SysV shared memory segment {} (key {:#x}, {} bytes)",
        s.id, s.key, s.size
    )
}

/// Every segment of cryo's IPC namespace.
fn live() -> Result<Vec<Listed>, IpcError> {
    super::listed("shm", "shmid")
}

/// The segments of each IPC namespace other than cryo's a dump has listed: its processes
/// are frozen (one outside the dump in it is refused), so the list holds for the dump.
#[derive(Default)]
struct NamespaceLists(std::collections::HashMap<u64, Vec<Listed>>);

/// Dumps the segment attached at `entry` of frozen `pid` (once per segment: later
/// attachments, of this process or another, get the same description); returns the
/// description id and the segment's id.
pub(crate) fn dump_attachment(
    pid: Pid,
    entry: &MapEntry,
    files: &mut FileTable,
    images: &ImageDir,
) -> Result<(u32, i32), FileError> {
    let shmid = entry.ino as i32;
    let what = format!("SysV shared memory segment {shmid} at {:#x}", entry.start);
    let refuse = |detail: String| IpcError::Refused {
        pid,
        what: what.clone(),
        detail,
    };
    let step = |op: &str, source| IpcError::step(&format!("pid {pid}: {what}"), op)(source);
    let ns = super::namespace_of(pid).map_err(|e| step("read its IPC namespace", e))?;
    let segments = if ns == 0 {
        live()?
    } else {
        // Listed once per namespace: joining one costs a thread (and a wakeup) each time.
        let lists = &mut files.kind_state().get::<NamespaceLists>().0;
        match lists.get(&ns) {
            Some(l) => l.clone(),
            None => {
                let l = super::namespace::run_in_namespace_of(pid, live)?;
                lists.insert(ns, l.clone());
                l
            }
        }
    };
    let seg = segments
        .into_iter()
        .find(|l| l.id == shmid)
        .ok_or_else(|| refuse("not listed in /proc/sysvipc/shm".into()))?;
    let size = seg.col("size") as u64;
    let link = crate::proc::dir(pid).join(format!("map_files/{:x}-{:x}", entry.start, entry.end));
    // A hugetlb segment is attached in whole huge pages.
    let page = match crate::memory::hugetlb::page_size_at(&link) {
        Ok(huge) => huge.unwrap_or(PAGE),
        Err(e) => return Err(step("statfs its map_files link", e).into()),
    };
    let whole = size.div_ceil(page) * page;
    // The maps name carries the key it was made with ("/SYSV%08x"): a segment attached
    // before the process changed IPC namespace is of the old one, where the new one may list
    // another of its id. (IPC_RMID makes the key private: then only the size tells.)
    let key = entry
        .name
        .strip_prefix("/SYSV")
        .and_then(|k| k.get(..8))
        .and_then(|k| u32::from_str_radix(k, 16).ok());
    let destroyed = seg.perms & SHM_DEST != 0;
    if (!destroyed && key != Some(seg.key as u32)) || entry.end - entry.start > whole {
        return Err(refuse(format!(
            "not the segment {shmid} of its IPC namespace (key {:#x}, {size} bytes): attached \
             before the process changed IPC namespace, not supported",
            seg.key
        ))
        .into());
    }
    // A piece of an attachment (its protection changed in part): check_pieces sees the
    // attachment whole once every VMA is read.
    if entry.pgoff + (entry.end - entry.start) > whole {
        return Err(refuse(format!(
            "mapped beyond the segment ({:#x}-{:#x} at offset {:#x} of a {}-byte segment), \
             not supported",
            entry.start, entry.end, entry.pgoff, size
        ))
        .into());
    }
    let id = files.add_sysv_segment(ns, shmid, || {
        let file = File::open(&link).map_err(|e| step("open its map_files link", e))?;
        let rec = save(&seg, &file, ns, images, pid)?;
        Ok(Kind::SysvShm(rec))
    })?;
    Ok((id, shmid))
}

/// Refuses a SysV attachment of `vmas` (of `pid`, in address order) that is not whole: its
/// pieces (one VMA each where an mprotect split it) must follow each other from offset 0 to
/// the segment's end; a part unmapped (munmap, mremap) is not supported. A restore attaches
/// the segment once at the first piece and gives each piece its protection.
pub(crate) fn check_pieces(pid: Pid, vmas: &[Vma], files: &FileTable) -> Result<(), FileError> {
    let whole_of = |id: u32| {
        files
            .descs()
            .iter()
            .find(|d| d.id == id)
            .and_then(|d| match &d.kind {
                Some(Kind::SysvShm(rec)) => {
                    let page = if rec.hugetlb_page_size != 0 {
                        rec.hugetlb_page_size
                    } else {
                        PAGE
                    };
                    Some(rec.size.div_ceil(page) * page)
                }
                _ => None,
            })
    };
    let sysv = |v: &&Vma| v.kind == VmaKind::SysvShm as i32;
    let mut open: Option<(&Vma, u64)> = None;
    let mut pieces = vmas.iter().filter(sysv).peekable();
    while let Some(v) = pieces.next() {
        let continues = open.is_some_and(|(first, end)| {
            first.file_id == v.file_id && v.start == first.start + end && v.pgoff == end
        });
        let end = v.pgoff + (v.end - v.start);
        let (first, _) = match open {
            Some((first, _)) if continues => (first, end),
            _ if v.pgoff == 0 => (v, end),
            _ => return Err(in_part(pid, v)),
        };
        open = Some((first, end));
        let next_continues = pieces
            .peek()
            .is_some_and(|n| n.file_id == v.file_id && n.start == v.end && n.pgoff == end);
        if !next_continues {
            if Some(end) != whole_of(v.file_id) {
                return Err(in_part(pid, first));
            }
            open = None;
        }
    }
    Ok(())
}

fn in_part(pid: Pid, v: &Vma) -> FileError {
    IpcError::Refused {
        pid,
        what: format!(
            "SysV shared memory segment {} at {:#x}",
            v.sysv_shmid, v.start
        ),
        detail: format!(
            "attached in part ({:#x}-{:#x} at offset {:#x}: a part unmapped or moved), not \
             supported",
            v.start, v.end, v.pgoff
        ),
    }
    .into()
}

/// The record of segment `seg` of IPC namespace `ns` (0: cryo's), its contents read from
/// `file` (an attachment's map_files link) into a raw image of their own; `pid`: the process
/// of the dump it is refused for.
fn save(
    seg: &Listed,
    file: &File,
    ns: u64,
    images: &ImageDir,
    pid: Pid,
) -> Result<SysvShm, IpcError> {
    let what = format!("SysV shared memory segment {} (key {:#x})", seg.id, seg.key);
    let step = |op: &str| IpcError::step(&format!("pid {pid}: {what}"), op);
    let huge = crate::memory::hugetlb::page_size_of(file).map_err(step("fstatfs"))?;
    let meta = file.metadata().map_err(step("stat"))?;
    let size = seg.col("size") as u64;
    // Ids start again in every namespace: the namespace names the image too.
    let name = match ns {
        0 => format!("sysvshm-{}.img", seg.id),
        ns => format!("sysvshm-{ns}-{}.img", seg.id),
    };
    let (contents, extents) = match huge {
        Some(page) => {
            let present = crate::memory::hugetlb::present_pages(pid, &meta, page);
            crate::memory::hugetlb::save_contents(file, size, page, &present, name, images)
        }
        None => crate::files::shmem::save_extents(file, size, name, images),
    }
    .map_err(step("save its contents"))?;
    let rec = SysvShm {
        id: seg.id,
        key: seg.key,
        size,
        uid: seg.uid,
        gid: seg.gid,
        cuid: seg.cuid,
        cgid: seg.cgid,
        mode: seg.mode(),
        destroyed: seg.perms & SHM_DEST != 0,
        locked: seg.perms & SHM_LOCKED != 0,
        cpid: seg.col("cpid") as i32,
        ctime: seg.col("ctime"),
        contents: Some(contents),
        extents,
        ipc_ns: ns,
        hugetlb_page_size: huge.unwrap_or(0),
    };
    debug!(
        shmid = rec.id,
        key = rec.key,
        size = rec.size,
        ns,
        "SysV shared memory segment"
    );
    Ok(rec)
}

/// A segment of IPC namespace `ns` (that of `pid`, which the calling thread is in) that no
/// process of the dump attaches, its contents read through a short read-write attachment in
/// cryo (root reads any segment; it sets the segment's attach and detach times and last pid).
pub(super) fn dump_unattached(
    seg: &Listed,
    ns: u64,
    images: &ImageDir,
    pid: Pid,
) -> Result<SysvShm, IpcError> {
    let what = format!(
        "pid {pid}: SysV shared memory segment {} (key {:#x})",
        seg.id, seg.key
    );
    let step = |op: &str| IpcError::step(&what, op);
    let attached = sys::ipc::Attached::new(seg.id).map_err(step("attach in cryo"))?;
    let link = attached_link(&attached).map_err(step("find its attachment in cryo"))?;
    let file = File::open(&link).map_err(step("open its map_files link"))?;
    save(seg, &file, ns, images, pid)
}

/// The map_files link of a segment cryo attached: the VMA's end is that of whole pages,
/// huge pages for a hugetlb segment.
fn attached_link(attached: &sys::ipc::Attached) -> std::io::Result<String> {
    let start = attached.start();
    let maps = crate::proc::maps(nix::unistd::getpid()).map_err(std::io::Error::other)?;
    let vma = maps
        .iter()
        .find(|m| m.start == start)
        .ok_or_else(|| std::io::Error::other(format!("no mapping at {start:#x}")))?;
    Ok(format!("/proc/self/map_files/{start:x}-{:x}", vma.end))
}

/// Whether segment `s` is found again on this host at restore (reattached as it is: nothing
/// is made for it).
pub(crate) fn still_there(s: &SysvShm) -> bool {
    s.ipc_ns == 0 && live().is_ok_and(|l| matches!(fate(s, &l), Ok(Fate::Reattach)))
}

/// Every segment of the calling thread's IPC namespace.
pub(super) fn listed() -> Result<Vec<Listed>, IpcError> {
    live()
}

/// Decides what becomes of `s` among the segments `live` of this machine.
fn fate(s: &SysvShm, live: &[Listed]) -> Result<Fate, IpcError> {
    super::fate(
        &describe(s),
        (s.id, s.key),
        live,
        |l| (l.id, l.key),
        |l| {
            l.key == s.key
                && l.col("size") as u64 == s.size
                && l.col("cpid") as i32 == s.cpid
                && l.col("ctime") == s.ctime
                && (l.perms & SHM_DEST != 0) == s.destroyed
        },
    )
}

/// shmat flags for an attachment whose protection becomes `prot` (step 5 of the memory
/// restore sets it exactly): read-only unless it is writable or may be made so (`may_write`:
/// attached without SHM_RDONLY, mprotect'd read-only since), executable when `exec`.
pub(crate) fn shmat_flags(prot: u32, may_write: bool, exec: bool) -> u64 {
    let mut flags = 0;
    if prot & libc::PROT_WRITE as u32 == 0 && !may_write {
        flags |= SHM_RDONLY;
    }
    if exec || prot & libc::PROT_EXEC as u32 != 0 {
        flags |= SHM_EXEC;
    }
    flags
}

/// Makes (or finds again) every segment of `segments` in the calling thread's IPC namespace.
pub(super) fn create<'a>(
    segments: impl IntoIterator<Item = &'a SysvShm>,
    images: &ImageDir,
    out: &mut super::Restored,
) -> Result<(), IpcError> {
    for s in segments {
        if fate(s, &live()?)? == Fate::Reattach {
            debug!(
                shmid = s.id,
                "SysV segment still there: reattached as it is"
            );
            continue;
        }
        let mut flags = libc::IPC_CREAT | libc::IPC_EXCL | (s.mode & 0o777) as i32;
        if s.hugetlb_page_size != 0 {
            flags |= libc::SHM_HUGETLB | sys::mmap::hugetlb_size_flag(s.hugetlb_page_size);
        }
        out.make(
            ObjectKind::Shm,
            describe(s),
            s.id,
            (s.cuid, s.cgid),
            s.destroyed,
            || sys::ipc::shmget(s.key, s.size, flags),
            |id| {
                let step = |op: &str| IpcError::step(&describe(s), op);
                sys::ipc::shm_set_owner(id, s.uid, s.gid, s.mode).map_err(step("IPC_SET"))?;
                if s.locked {
                    sys::ipc::shm_command(id, libc::SHM_LOCK).map_err(step("SHM_LOCK"))?;
                }
                fill(s, images)
            },
        )?;
    }
    Ok(())
}

/// Writes the dumped contents of `s` into the segment, through a short attachment in cryo.
fn fill(s: &SysvShm, images: &ImageDir) -> Result<(), IpcError> {
    let step = |op: &str| IpcError::step(&describe(s), op);
    let Some(raw) = &s.contents else {
        return Ok(());
    };
    let attached = sys::ipc::Attached::new(s.id).map_err(step("attach in cryo"))?;
    let link = attached_link(&attached).map_err(step("find its attachment in cryo"))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&link)
        .map_err(step("open its map_files link"))?;
    // hugetlbfs has no write(2): its pages are written through a mapping.
    if s.hugetlb_page_size != 0 {
        let whole = s.size.div_ceil(s.hugetlb_page_size) * s.hugetlb_page_size;
        crate::memory::hugetlb::write_contents(&file, whole, raw, &s.extents, images)
    } else {
        crate::files::shmem::write_extents(&file, raw, &s.extents, images)
    }
    .map_err(step("write its contents"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg() -> SysvShm {
        SysvShm {
            id: 7,
            key: 0x1234,
            size: 8192,
            cpid: 100,
            ctime: 5,
            ..Default::default()
        }
    }

    fn live_of(s: &SysvShm) -> Listed {
        let row = [
            ("shmid", s.id as i64),
            ("key", s.key as i64),
            ("size", s.size as i64),
            ("perms", 0o600),
            ("cpid", s.cpid as i64),
            ("ctime", s.ctime),
        ];
        Listed::of(
            row.iter().map(|(c, v)| (c.to_string(), *v)).collect(),
            "shmid",
        )
    }

    #[test]
    fn the_very_segment_is_reattached() {
        let s = seg();
        assert_eq!(fate(&s, &[live_of(&s)]).unwrap(), Fate::Reattach);
        assert_eq!(fate(&s, &[]).unwrap(), Fate::Create);
    }

    #[test]
    fn another_segment_on_the_id_or_key_is_refused() {
        let s = seg();
        let mut other = live_of(&s);
        other.row.insert("cpid".into(), 999);
        other = Listed::of(other.row, "shmid");
        assert!(matches!(fate(&s, &[other]), Err(IpcError::Taken { .. })));
        let mut same_key = live_of(&s);
        same_key.id = 8;
        assert!(matches!(fate(&s, &[same_key]), Err(IpcError::Taken { .. })));
        // Private segments share key 0.
        let private = SysvShm { key: 0, ..seg() };
        let mut zero = live_of(&private);
        zero.id = 8;
        assert_eq!(fate(&private, &[zero]).unwrap(), Fate::Create);
    }

    #[test]
    fn read_only_attachments() {
        let r = libc::PROT_READ as u32;
        assert_eq!(shmat_flags(r, false, false), SHM_RDONLY);
        assert_eq!(shmat_flags(r | libc::PROT_WRITE as u32, true, false), 0);
        // Attached read-write, mprotect'd read-only since: it may be made writable again.
        assert_eq!(shmat_flags(r, true, false), 0);
        assert_eq!(shmat_flags(r, false, true), SHM_RDONLY | SHM_EXEC);
    }
}
