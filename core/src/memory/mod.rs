//! Address spaces: which VMAs and which pages a dump keeps (dump), and how the restore
//! child's address space is rebuilt from them through remote syscalls (restore).

pub mod dirty;
pub mod dump;
pub mod error;
pub mod guard;
pub mod hugetlb;
pub mod numa;
pub mod pagestate;
pub mod precopy;
pub mod premap;
pub mod restore;
pub mod vmflags;
pub mod warm;

use cryo_proto::image::VmaKind;

use crate::proc::MapEntry;

/// Page size on x86_64.
pub const PAGE: u64 = 4096;

/// Pages move between memory and the pages image in calls of this size: measured here, a
/// single huge read or write runs at a third of the speed of 2-4 MiB ones.
pub const IO_CHUNK: u64 = 4 << 20;

/// What a VMA is, from its /proc/PID/maps line.
pub fn classify(entry: &MapEntry) -> VmaKind {
    match entry.name.as_str() {
        "[vdso]" => VmaKind::Vdso,
        "[vvar]" => VmaKind::Vvar,
        "[vvar_vclock]" => VmaKind::VvarVclock,
        "[vsyscall]" => VmaKind::Vsyscall,
        "[heap]" => VmaKind::Heap,
        "[stack]" => VmaKind::Stack,
        // A SysV segment attached with shmat (ipc/shm.rs), its inode number the shmid: 0 for
        // the first segment of an IPC namespace (taken for shared anonymous memory before).
        name if entry.shared && name.starts_with("/SYSV") => VmaKind::SysvShm,
        _ if entry.ino == 0 => {
            if entry.shared {
                VmaKind::ShmemAnon
            } else {
                VmaKind::Anon
            }
        }
        // The ring of an AIO context (files/aio.rs).
        name if entry.shared && crate::files::aio::is_ring(name) => VmaKind::AioRing,
        // A packet socket's rings (sockets/packet_ring.rs): the socket's name; mapped shared,
        // or private (its pages the rings' until the process writes them: then copies).
        name if name.starts_with("socket:[") => VmaKind::PacketRing,
        // Shared anonymous memory shows as a deleted /dev/zero, or by the name the process
        // gave it (PR_SET_VMA_ANON_NAME), which is no path.
        name if entry.shared && name.starts_with("/dev/zero") => VmaKind::ShmemAnon,
        name if entry.shared && name.starts_with(ANON_SHMEM_NAME.0) => VmaKind::ShmemAnon,
        _ if entry.shared => VmaKind::FileShared,
        _ => VmaKind::FilePrivate,
    }
}

/// How /proc/PID/maps shows the name a process gave anonymous memory with
/// prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME): `[anon:NAME]`, `[anon_shmem:NAME]` when shared.
const ANON_NAME: (&str, &str) = ("[anon:", "]");
const ANON_SHMEM_NAME: (&str, &str) = ("[anon_shmem:", "]");

/// The name a process gave the anonymous VMA `vma` (PR_SET_VMA_ANON_NAME), if any: restored
/// with the same prctl. The kernel shows none for the heap and stack, whatever they were given.
pub fn anon_name(vma: &cryo_proto::image::Vma) -> Option<&str> {
    let (prefix, suffix) = match VmaKind::try_from(vma.kind) {
        Ok(VmaKind::Anon) => ANON_NAME,
        Ok(VmaKind::ShmemAnon) => ANON_SHMEM_NAME,
        _ => return None,
    };
    vma.name.strip_prefix(prefix)?.strip_suffix(suffix)
}

/// True for the kernel-provided mappings that are moved, not recreated.
pub fn is_special(kind: VmaKind) -> bool {
    matches!(
        kind,
        VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall
    )
}

/// pagemap entry bits.
pub(crate) const PM_PRESENT: u64 = 1 << 63;
const PM_SWAPPED: u64 = 1 << 62;
const PM_FILE_OR_SHARED: u64 = 1 << 61;
/// A guard page (madvise MADV_GUARD_INSTALL, Linux 6.15): shown swapped too, but holds no data
/// (reading it fails); the dump keeps where it is instead (`MmCore.guards`).
const PM_GUARD_REGION: u64 = 1 << 58;

/// `MAP_DROPPABLE` (Linux 6.11): a private anonymous mapping whose pages the kernel may free
/// at any time; a mapping type of its own, in place of MAP_PRIVATE.
pub const MAP_DROPPABLE: u32 = 0x08;
/// `MAP_TYPE`: the bits of the mmap flags that say the mapping's type.
const MAP_TYPE: u32 = 0x0f;

/// Whether `vma` was mapped with MAP_DROPPABLE.
pub fn is_droppable(vma: &cryo_proto::image::Vma) -> bool {
    vma.map_flags & MAP_TYPE == MAP_DROPPABLE
}

/// Whether the page with pagemap entry `pm` of a VMA of `kind` holds data only the dump keeps.
pub fn page_wanted(kind: VmaKind, pm: u64) -> bool {
    if pm & PM_GUARD_REGION != 0 {
        return false;
    }
    match kind {
        // A page only read maps a zero page: none of its own, it reads zeros again at
        // restore (left unmapped), without a copy in the image or in memory.
        VmaKind::Anon | VmaKind::Heap | VmaKind::Stack => {
            pm & PM_SWAPPED != 0
                || (pm & PM_PRESENT != 0
                    && !crate::sys::pagemap::zero_pages()
                        .holds(pm & crate::sys::pagemap::PM_PFN_MASK))
        }
        // Only the private copies: pages still backed by the file (or a packet ring's pages,
        // in a private mapping of the rings) come back from the file (from the rings).
        VmaKind::FilePrivate | VmaKind::PacketRing => {
            pm & PM_SWAPPED != 0 || (pm & PM_PRESENT != 0 && pm & PM_FILE_OR_SHARED == 0)
        }
        // Shared memory is saved once per object, with the files (files/shmem.rs).
        _ => false,
    }
}

/// Size and crc32c of the vdso `pid` runs with: a restore refuses an image whose vdso differs
/// from the one this kernel gives (the dumped code may have been inside it).
pub fn vdso_identity(pid: nix::unistd::Pid) -> crate::error::Result<(u64, u32)> {
    let maps = crate::proc::maps(pid)?;
    let Some(vdso) = maps.iter().find(|m| m.name == "[vdso]") else {
        return Ok((0, 0));
    };
    let mut buf = vec![0u8; vdso.len() as usize];
    crate::sys::ptrace::read_mem(pid, vdso.start, &mut buf)
        .map_err(|e| crate::error::Error::sys(pid, "read the vdso", e))?;
    Ok((vdso.len(), crc32c::crc32c(&buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, ino: u64, shared: bool) -> MapEntry {
        MapEntry {
            start: 0x1000,
            end: 0x2000,
            prot: 3,
            shared,
            pgoff: 0,
            dev: (0, 0),
            ino,
            name: name.into(),
        }
    }

    #[test]
    fn classifies_maps() {
        assert_eq!(classify(&entry("", 0, false)), VmaKind::Anon);
        assert_eq!(classify(&entry("", 0, true)), VmaKind::ShmemAnon);
        assert_eq!(
            classify(&entry("/dev/zero (deleted)", 9, true)),
            VmaKind::ShmemAnon
        );
        assert_eq!(
            classify(&entry("/usr/lib/libc.so.6", 9, false)),
            VmaKind::FilePrivate
        );
        assert_eq!(classify(&entry("/data", 9, true)), VmaKind::FileShared);
        // Named anonymous memory (PR_SET_VMA_ANON_NAME): the name is no path.
        assert_eq!(classify(&entry("[anon:jit code]", 0, false)), VmaKind::Anon);
        assert_eq!(
            classify(&entry("[anon_shmem:ring]", 9, true)),
            VmaKind::ShmemAnon
        );
        assert_eq!(
            classify(&entry("/SYSV00001234 (deleted)", 3, true)),
            VmaKind::SysvShm
        );
        // The first segment of an IPC namespace: shmid 0, so inode 0.
        assert_eq!(
            classify(&entry("/SYSV00001234 (deleted)", 0, true)),
            VmaKind::SysvShm
        );
        assert_eq!(
            classify(&entry("[vvar_vclock]", 0, false)),
            VmaKind::VvarVclock
        );
        assert_eq!(classify(&entry("[heap]", 0, false)), VmaKind::Heap);
        assert_eq!(
            classify(&entry("socket:[6218131]", 6218131, true)),
            VmaKind::PacketRing
        );
        assert_eq!(
            classify(&entry("socket:[6218131]", 6218131, false)),
            VmaKind::PacketRing
        );
    }

    #[test]
    fn keeps_private_copies_only() {
        assert!(page_wanted(VmaKind::Anon, PM_PRESENT));
        assert!(!page_wanted(VmaKind::Anon, 0));
        assert!(page_wanted(VmaKind::Anon, PM_SWAPPED));
        assert!(!page_wanted(VmaKind::Anon, PM_SWAPPED | PM_GUARD_REGION));
        assert!(!page_wanted(
            VmaKind::FilePrivate,
            PM_SWAPPED | PM_GUARD_REGION
        ));
        assert!(!page_wanted(
            VmaKind::FilePrivate,
            PM_PRESENT | PM_FILE_OR_SHARED
        ));
        assert!(page_wanted(VmaKind::FilePrivate, PM_PRESENT));
        assert!(page_wanted(VmaKind::PacketRing, PM_PRESENT));
        assert!(!page_wanted(
            VmaKind::PacketRing,
            PM_PRESENT | PM_FILE_OR_SHARED
        ));
        assert!(!page_wanted(VmaKind::FileShared, PM_PRESENT));
        assert!(!page_wanted(VmaKind::ShmemAnon, PM_PRESENT));
        assert!(!page_wanted(VmaKind::Vdso, PM_PRESENT));
    }

    #[test]
    fn anon_names_come_out_of_their_brackets() {
        let vma = |name: &str, kind: VmaKind| cryo_proto::image::Vma {
            name: name.into(),
            kind: kind as i32,
            ..Default::default()
        };
        assert_eq!(
            anon_name(&vma("[anon:jit code]", VmaKind::Anon)),
            Some("jit code")
        );
        assert_eq!(
            anon_name(&vma("[anon_shmem:ring]", VmaKind::ShmemAnon)),
            Some("ring")
        );
        assert_eq!(anon_name(&vma("", VmaKind::Anon)), None);
        assert_eq!(
            anon_name(&vma("/dev/zero (deleted)", VmaKind::ShmemAnon)),
            None
        );
        assert_eq!(anon_name(&vma("[anon:x]", VmaKind::FilePrivate)), None);
    }
}
