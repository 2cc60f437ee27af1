//! memfd and shared anonymous memory: new objects, and their seals.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, SealFlag};

use super::mmap::Mapping;

/// A new memfd named `name` (`flags`: MFD_*).
pub(crate) fn memfd_create(name: &str, flags: libc::c_uint) -> io::Result<OwnedFd> {
    let flags = nix::sys::memfd::MFdFlags::from_bits_retain(flags as _);
    Ok(nix::sys::memfd::memfd_create(name, flags)?)
}

/// The device of the kernel's internal shmem mount, on which memfds and shared anonymous
/// memory live (read once, from a memfd of cryo's); None if no memfd can be made.
pub(crate) fn internal_shmem_dev() -> Option<u64> {
    static DEV: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *DEV.get_or_init(|| {
        let fd = memfd_create("cryo-shmem-dev", libc::MFD_CLOEXEC).ok()?;
        nix::sys::stat::fstat(&fd).ok().map(|st| st.st_dev)
    })
}

/// New shared anonymous memory of `size` bytes, as an fd on its shmem file: a
/// MAP_SHARED|MAP_ANONYMOUS mapping is made, its /proc/self/map_files link opened O_RDWR and
/// the mapping removed (the fd keeps the object; the kernel names it "/dev/zero").
pub(crate) fn shmem_anon(size: u64) -> io::Result<OwnedFd> {
    let page = 4096u64;
    let len = usize::try_from(size.div_ceil(page) * page).map_err(io::Error::other)?;
    let fd = object_of(Mapping::anonymous(len, true)?, len)?;
    if size != len as u64 {
        // A SysV segment's size need not be a page multiple.
        nix::unistd::ftruncate(&fd, size as libc::off_t)?;
    }
    Ok(fd)
}

/// New shared anonymous hugetlb memory of `size` bytes in huge pages of `page_size` bytes,
/// as an fd on its hugetlbfs file (as [`shmem_anon`]: the kernel names it
/// "/anon_hugepage"); no huge page is reserved (the mappings of the processes reserve theirs).
pub(crate) fn shmem_anon_hugetlb(size: u64, page_size: u64) -> io::Result<OwnedFd> {
    let len = usize::try_from(size.div_ceil(page_size) * page_size).map_err(io::Error::other)?;
    object_of(Mapping::anonymous_hugetlb(len, page_size)?, len)
}

/// An fd on the object behind shared `mapping` of `len` bytes (its /proc/self/map_files link
/// opened O_RDWR), the mapping removed.
fn object_of(mapping: Mapping, len: usize) -> io::Result<OwnedFd> {
    let start = mapping.start();
    let link = format!("/proc/self/map_files/{start:x}-{:x}", start + len as u64);
    let opened = nix::fcntl::open(
        link.as_str(),
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    );
    drop(mapping);
    Ok(opened?)
}

/// The seals of a memfd (F_GET_SEALS).
pub(crate) fn get_seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(fcntl(fd, FcntlArg::F_GET_SEALS)? as u32)
}

/// Adds seals to a memfd (F_ADD_SEALS).
pub(crate) fn add_seals(fd: BorrowedFd<'_>, seals: u32) -> io::Result<()> {
    let seals = SealFlag::from_bits_retain(seals as libc::c_int);
    fcntl(fd, FcntlArg::F_ADD_SEALS(seals))?;
    Ok(())
}
