//! Memory mappings owned by cryo itself: windows onto image files, and anonymous memory (the
//! object behind a restored shared anonymous mapping, the pages `cryo check` probes).

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
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
