//! Memory mappings owned by cryo itself: windows onto image files, and anonymous memory (the
//! object behind a restored shared anonymous mapping, the pages `cryo check` probes).

use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::ptr::NonNull;

/// A mapping of a file (or anonymous memory) into cryo, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps the first `len` bytes of `file`, shared, writable if `write`.
    pub fn map_file(file: &File, len: usize, write: bool) -> std::io::Result<Self> {
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        Self::map(len, prot, libc::MAP_SHARED, file.as_raw_fd())
    }

    /// Maps the first `len` bytes of `file`, shared, read-only, its page tables filled at
    /// once (MAP_POPULATE): a mapping about to be read whole.
    pub fn map_file_populated(file: &File, len: usize) -> std::io::Result<Self> {
        Self::map(
            len,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            file.as_raw_fd(),
        )
    }

    /// Maps the first `len` bytes of what fd `fd` offers to mmap (a packet socket's rings),
    /// shared, writable if `write`.
    pub fn map_fd(fd: BorrowedFd<'_>, len: usize, write: bool) -> std::io::Result<Self> {
        let prot = if write {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        Self::map(len, prot, libc::MAP_SHARED, fd.as_raw_fd())
    }

    /// A copy of the mapped bytes, read as they are now (memory the kernel may be writing
    /// at the same time, such as a packet ring, is copied without forming a reference to it).
    pub fn copy_out(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        // SAFETY: ptr..ptr+len is a live mapping owned by self; `out` is a fresh buffer of
        // the same length; the copy goes through raw pointers, no reference to the shared
        // bytes is formed.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), out.as_mut_ptr(), self.len) };
        out
    }

    /// The native u32 at `offset`, read once (volatile: the kernel writes it; `None` out of
    /// range or misaligned).
    pub fn read_u32(&self, offset: usize) -> Option<u32> {
        if !offset.is_multiple_of(4) || offset.checked_add(4)? > self.len {
            return None;
        }
        // SAFETY: offset..offset+4 lies inside the live mapping self owns, aligned (checked
        // above; the mapping is page-aligned).
        Some(unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(offset).cast::<u32>()) })
    }

    /// Maps `len` bytes of fresh anonymous memory, read-write, shared (a shmem object) or
    /// private.
    pub fn anonymous(len: usize, shared: bool) -> std::io::Result<Self> {
        let kind = if shared {
            libc::MAP_SHARED
        } else {
            libc::MAP_PRIVATE
        };
        Self::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS,
            -1,
        )
    }

    /// Maps `len` bytes of fresh shared anonymous hugetlb memory of huge pages of
    /// `page_size` bytes (MAP_HUGETLB with that size), without reserving huge pages
    /// (MAP_NORESERVE): the object behind a restored shared anonymous hugetlb mapping, whose
    /// processes reserve what they map themselves.
    pub fn anonymous_hugetlb(len: usize, page_size: u64) -> std::io::Result<Self> {
        Self::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_HUGETLB
                | hugetlb_size_flag(page_size),
            -1,
        )
    }

    /// Maps the first `len` bytes of `file`, shared and writable, without reserving huge
    /// pages (MAP_NORESERVE): for writing into a hugetlbfs file, which has no write(2), the
    /// pages it writes allocated beforehand (fallocate).
    pub fn map_file_noreserve(file: &File, len: usize) -> std::io::Result<Self> {
        Self::map(
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
            file.as_raw_fd(),
        )
    }

    /// The mapped bytes, to write into (a writable mapping owned by cryo alone).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr..ptr+len is a live mapping owned by self, borrowed mutably for the
        // slice's lifetime: no other Rust reference to it exists meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    fn map(len: usize, prot: libc::c_int, flags: libc::c_int, fd: RawFd) -> std::io::Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address), of a file we hold
        // open or of anonymous memory; nothing else refers to the returned memory.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast()).ok_or_else(|| std::io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }

    /// The mapped bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr..ptr+len is a live mapping owned by self for self's lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Copies `bytes` into the mapping at `offset` (a writable mapping; out of range is an
    /// error, not a fault).
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> std::io::Result<()> {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return Err(std::io::Error::other("write outside the mapping"));
        }
        // SAFETY: offset..offset+len lies inside the mapping self owns (checked above), and
        // `bytes` cannot overlap it (it is borrowed, the mapping is exclusively ours).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        };
        Ok(())
    }

    /// The address of the first byte.
    pub fn start(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region this value owns; no references outlive self.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The mmap (and memfd_create, shmget) flag bits that ask for huge pages of `page_size`
/// bytes: log2 of the size at MAP_HUGE_SHIFT (26), the same place for MFD_HUGE_* and
/// SHM_HUGE_*.
pub fn hugetlb_size_flag(page_size: u64) -> libc::c_int {
    (page_size.trailing_zeros() as libc::c_int) << libc::MAP_HUGE_SHIFT
}

/// Maps `len` bytes exactly at `addr` (which must be free: MAP_FIXED_NOREPLACE) with `prot`
/// and the private mapping `flags` (MAP_ANONYMOUS with `fd` None, else of file `fd` from byte
/// `offset`). The region belongs to no Rust object: it is memory staged for the address space
/// a restored process is about to get.
pub fn map_staged(
    addr: u64,
    len: u64,
    prot: libc::c_int,
    flags: libc::c_int,
    fd: Option<RawFd>,
    offset: u64,
) -> std::io::Result<()> {
    let flags =
        flags | libc::MAP_FIXED_NOREPLACE | if fd.is_none() { libc::MAP_ANONYMOUS } else { 0 };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no memory any Rust
    // object refers to changes; the new region is referred to by address only.
    let got = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            len as usize,
            prot,
            flags,
            fd.unwrap_or(-1),
            offset as libc::off_t,
        )
    };
    if got == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    if got as u64 != addr {
        // An old kernel that ignores MAP_FIXED_NOREPLACE put it elsewhere: undo.
        // SAFETY: unmapping the region just created, which nothing refers to.
        unsafe { libc::munmap(got, len as usize) };
        return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
    }
    Ok(())
}

/// Unmaps `addr..addr + len`, staged memory no Rust object refers to.
pub fn unmap_staged(addr: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: the caller names a staged region (see map_anonymous_at), never memory a Rust
    // object refers to.
    if unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Applies every CPU's pending batch of LRU changes to its pages: the kernel batches them
/// per CPU (a page freed with MADV_FREE is lazily freed, in smaps and under memory pressure,
/// only then). mlock drains every CPU's batches first (lru_add_drain_all); the byte of ours
/// it locks is unlocked at once.
pub fn drain_lru_batches() -> std::io::Result<()> {
    let byte = std::hint::black_box([0u8; 1]);
    let at = byte.as_ptr().cast::<libc::c_void>();
    // SAFETY: locks and unlocks the page of a local of ours; its contents do not change.
    if unsafe { libc::mlock(at, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::munlock(at, 1) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// madvise(`addr`, `len`, `advice`) on staged memory.
pub fn advise_staged(addr: u64, len: u64, advice: libc::c_int) -> std::io::Result<()> {
    // SAFETY: madvise on a staged region; MADV_DONTNEED there only zeroes memory no Rust
    // object refers to.
    if unsafe { libc::madvise(addr as *mut libc::c_void, len as usize, advice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Copies `src` into the staged region at `addr` (`src.len()` bytes of it must be mapped
/// read-write there).
pub fn copy_into_staged(addr: u64, src: &[u8]) {
    // SAFETY: the caller names a staged read-write region of at least src.len() bytes that
    // no Rust object refers to; src (image pages mapped elsewhere) cannot overlap it.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), addr as *mut u8, src.len()) };
}

/// Reads `len` bytes of `file` from `offset` into the staged region at `addr` (mapped
/// read-write there), by pread straight into it.
pub fn read_into_staged(file: &File, addr: u64, len: u64, offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < len {
        let chunk = (len - done).min(crate::memory::IO_CHUNK) as usize;
        // SAFETY: the caller names a staged read-write region of at least `len` bytes that no
        // Rust object refers to; the kernel writes into it through the raw pointer.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                (addr + done) as *mut libc::c_void,
                chunk,
                (offset + done) as libc::off_t,
            )
        };
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n < 0 => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as u64,
        }
    }
    Ok(())
}

/// Writes each page of `src` into the staged region at `addr` only where it differs from
/// what is there, so a page equal to the one inherited from the parent stays shared with it
/// (a write would copy it). Returns how many pages were written.
pub fn merge_into_staged(addr: u64, src: &[u8], page: usize) -> usize {
    let mut written = 0;
    for (i, want) in src.chunks(page).enumerate() {
        let at = (addr as usize + i * page) as *mut u8;
        // SAFETY: the caller names a staged region of at least src.len() bytes, readable and
        // writable, that no Rust object refers to and nothing writes meanwhile; src cannot
        // overlap it. The slice is not used after the write below.
        let same = unsafe { std::slice::from_raw_parts(at as *const u8, want.len()) } == want;
        if !same {
            // SAFETY: as above: a page of the staged region, src elsewhere.
            unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), at, want.len()) };
            written += 1;
        }
    }
    written
}
