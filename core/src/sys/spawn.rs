//! The raw calls of a restore's process creation: fds put at the fixed numbers the tree
//! expects, the one-shot reads and writes on control pipes known only by number in a forked
//! process, and the trampoline pages written there.

use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use nix::sys::mman::{mmap_anonymous, mprotect, MapFlags, ProtFlags};

/// Moves `fd` to number `at`: `at` stays open and unowned, the old number is closed.
pub fn move_to(fd: OwnedFd, at: RawFd) -> io::Result<()> {
    if fd.as_raw_fd() == at {
        // Keeping the number open is the point: it is no longer owned.
        let _ = fd.into_raw_fd();
        return Ok(());
    }
    // The number is the caller's slot: no OwnedFd of this process holds it.
    super::fd::dup_to(std::os::fd::AsFd::as_fd(&fd), at, false)
}

/// Writes `bytes` once to fd number `fd` (a control pipe end inherited by number).
pub fn write_raw(fd: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: write(2) reads our own buffer; a wrong fd number only yields EBADF.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Reads once from fd number `fd` (a control pipe end inherited by number) into `buf`.
pub fn read_raw(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read(2) writes into our own buffer, at most its length; a wrong fd number only
    // yields EBADF.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}

/// Maps `pages` pages at `addr` (read-write, MAP_FIXED_NOREPLACE), writes each
/// `(offset, bytes)` of `code` into them, then makes the first page read-execute.
pub fn map_code_pages(addr: u64, pages: usize, code: &[(usize, &[u8])]) -> io::Result<()> {
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |p| p as usize);
    let len = NonZeroUsize::new(pages * page).ok_or(io::ErrorKind::InvalidInput)?;
    if code.iter().any(|(at, bytes)| at + bytes.len() > page) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let at = NonZeroUsize::new(addr as usize);
    // SAFETY: a fixed mapping at an address the caller checked is unused in this process
    // (MAP_FIXED_NOREPLACE fails rather than replace anything).
    let ptr = unsafe {
        mmap_anonymous(
            at,
            len,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    }?;
    for &(offset, bytes) in code {
        // SAFETY: inside the first page we just mapped writable (checked above), owned by
        // nobody else.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                ptr.as_ptr().cast::<u8>().add(offset),
                bytes.len(),
            );
        }
    }
    // SAFETY: the first page of the mapping made above, with nothing borrowed inside it.
    unsafe { mprotect(ptr, page, ProtFlags::PROT_READ | ProtFlags::PROT_EXEC) }?;
    Ok(())
}
