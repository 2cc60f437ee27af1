//! Why a task's memory could not be restored: each variant names the task and the mapping.

use cryo_proto::image::VmaKind;
use nix::unistd::Pid;

/// A failure of the memory restore that is no failed system call (those are
/// [`crate::Error::Sys`], naming the call).
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A file mapping whose file the child did not open.
    #[error("pid {pid}: no file opened for the mapping at {start:#x} ({name})")]
    NoFileForMapping {
        /// The restored task.
        pid: Pid,
        /// The mapping's start.
        start: u64,
        /// Its name in the maps (the file's path).
        name: String,
    },
    /// mmap put a mapping elsewhere than asked.
    #[error("pid {pid}: mapping {start:#x} landed at {at:#x}")]
    Misplaced {
        /// The restored task.
        pid: Pid,
        /// Where the image has it.
        start: u64,
        /// Where the kernel put it.
        at: u64,
    },
    /// An anonymous VMA name longer than the kernel allows (the image is not what a dump
    /// writes).
    #[error("pid {pid}: mapping {start:#x}: anonymous name {name:?} is too long to set again")]
    AnonName {
        /// The restored task.
        pid: Pid,
        /// Where the image has it.
        start: u64,
        /// The name.
        name: String,
    },
    /// Some lazily freed pages of a VMA (MADV_FREE) were written since and some not: the
    /// kernel drops only the clean ones under memory pressure, and shows no page's dirty bit,
    /// so which to free again at restore cannot be told.
    #[error(
        "pid {pid}: mapping {start:#x}-{end:#x}: {clean_kb} kB of its {freed_kb} kB of lazily \
         freed pages (MADV_FREE) are still clean, the others written since, and which are \
         which cannot be read (not supported)"
    )]
    LazyFreeMixed {
        /// The dumped task.
        pid: Pid,
        /// The VMA's start.
        start: u64,
        /// Its end.
        end: u64,
        /// smaps LazyFree: the clean lazily freed pages.
        clean_kb: u64,
        /// The lazily freed pages, clean or written (no KPF_SWAPBACKED).
        freed_kb: u64,
    },
    /// The pages image is shorter than its page runs say.
    #[error("pid {pid}: pages image ends before page run at {addr:#x}")]
    PagesShort {
        /// The restored task.
        pid: Pid,
        /// The run's address.
        addr: u64,
    },
    /// The vdso or vvar block of this kernel is not the one the image had.
    #[error(
        "pid {pid}: the image's {kind:?} differs from this kernel's: restore on the kernel the \
         dump was taken on"
    )]
    VdsoDiffers {
        /// The restored task.
        pid: Pid,
        /// Which block.
        kind: VmaKind,
    },
    /// No room in the address space to stage a VMA shared with children.
    #[error("pid {pid}: no free address range to stage the VMA at {start:#x}")]
    NoStagingRoom {
        /// The restored task.
        pid: Pid,
        /// The VMA's start.
        start: u64,
    },
    /// A private mapping of a SysV segment (mapped again through /proc/PID/map_files).
    #[error(
        "pid {pid}: the mapping {start:#x}-{end:#x} ({name}) is a private mapping of a SysV \
         shared memory segment: its pages not written since follow the segment, which a \
         restored private copy would not: it cannot be restored"
    )]
    PrivateSysvShm {
        /// The dumped task.
        pid: Pid,
        /// The mapping's start.
        start: u64,
        /// Its end.
        end: u64,
        /// Its name in the maps.
        name: String,
    },
    /// A mapping with a flag no call can give it again.
    #[error(
        "pid {pid}: the mapping {start:#x}-{end:#x} ({name}) is {what} (VmFlags {flag}): it \
         cannot be restored"
    )]
    UnrestorableFlag {
        /// The dumped task.
        pid: Pid,
        /// The mapping's start.
        start: u64,
        /// Its end.
        end: u64,
        /// Its name in the maps.
        name: String,
        /// The VmFlags code.
        flag: &'static str,
        /// What it means.
        what: &'static str,
    },
    /// A VMA with a NUMA memory policy of its own (mbind).
    #[error(
        "pid {pid} thread {pid}: mapping {start:#x}-{end:#x} {name}: numa memory policy {policy} \
         (mbind) cannot be restored: cryo restores the default policy only"
    )]
    NumaPolicy {
        /// The dumped task.
        pid: Pid,
        /// The mapping's start.
        start: u64,
        /// Its end.
        end: u64,
        /// Its name in the maps.
        name: String,
        /// The policy as numa_maps shows it.
        policy: String,
    },
    /// KSM merging every mapping of the process (prctl PR_SET_MEMORY_MERGE): setting it
    /// again needs CAP_SYS_RESOURCE.
    #[error(
        "pid {pid}: KSM merge-any (prctl PR_SET_MEMORY_MERGE) cannot be restored yet (setting \
         it needs CAP_SYS_RESOURCE)"
    )]
    MergeAny {
        /// The dumped task.
        pid: Pid,
    },
    /// `--pre-copy` on a process that holds a userfaultfd of its own: its registrations
    /// and cryo's write-protect tracking cannot share the address space.
    #[error(
        "pid {pid}: fd {fd} is a userfaultfd: --pre-copy cannot track the writes of a process \
         that uses userfaultfd itself (dump without --pre-copy)"
    )]
    PreCopyOwnUserfaultfd {
        /// The dumped task.
        pid: Pid,
        /// The userfaultfd's number.
        fd: i32,
    },
    /// `--pre-copy` on a process with a mapping already registered with a userfaultfd.
    #[error(
        "pid {pid}: the mapping {start:#x}-{end:#x} is registered with a userfaultfd (VmFlags \
         {flag}): --pre-copy cannot track the writes of a process that uses userfaultfd itself"
    )]
    PreCopyRegistered {
        /// The dumped task.
        pid: Pid,
        /// The mapping's start.
        start: u64,
        /// Its end.
        end: u64,
        /// The VmFlags code.
        flag: &'static str,
    },
    /// A streamed image whose pre-copy rounds do not add up (the receiver's merge).
    #[error("pid {pid}: pre-copy merge: {detail}")]
    PreCopyMerge {
        /// The dumped task.
        pid: Pid,
        /// What is wrong.
        detail: String,
    },
    /// A hugetlb mapping of a kind cryo cannot restore.
    #[error("pid {pid}: the mapping {start:#x}-{end:#x} ({name}) is hugetlb memory: {why}")]
    Hugetlb {
        /// The dumped task.
        pid: Pid,
        /// The mapping's start.
        start: u64,
        /// Its end.
        end: u64,
        /// Its name in the maps.
        name: String,
        /// What it is.
        why: &'static str,
    },
    /// The image has hugetlb memory of a huge page size this host does not have.
    #[error(
        "the image's hugetlb memory takes {pages} huge pages of {} kB, a size this host does \
         not have (no /sys/kernel/mm/hugepages/hugepages-{}kB): restore on a host that has it",
        page_size >> 10,
        page_size >> 10
    )]
    HugePageSizeMissing {
        /// The huge page size in bytes.
        page_size: u64,
        /// How many the image takes.
        pages: u64,
    },
    /// Fewer huge pages of a size are free here than the restore takes.
    #[error(
        "the image's hugetlb memory takes {pages} huge pages of {} kB, this host has {} \
         available ({free} free, {reserved} of them reserved): nothing was made; a temporary \
         state: retry once huge pages are freed, or raise nr_hugepages",
        page_size >> 10,
        free.saturating_sub(*reserved)
    )]
    HugePagesShort {
        /// The huge page size in bytes.
        page_size: u64,
        /// How many the image takes.
        pages: u64,
        /// free_hugepages of that size here.
        free: u64,
        /// resv_hugepages of that size here.
        reserved: u64,
    },
}
