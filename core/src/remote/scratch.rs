//! The scratch page: one page of the tracee's memory mapped for the arguments and results of
//! remote calls (and, for calls trapped by int3, their code).

use std::io;

use super::{BatchCall, BatchError, BatchSite, Remote, BATCH_ENTRY, BATCH_LOOP, SYSCALL_INT3};
use crate::sys::ptrace as pt;

/// One page of the tracee's memory we map for arguments and results of remote calls.
pub struct Scratch {
    /// Its address in the tracee.
    pub addr: u64,
    /// Where batches run from: the remote's self-returning loop, or the page's own.
    batch_code: u64,
}

impl Scratch {
    /// Size of the scratch area.
    pub const LEN: u64 = 4096;

    /// Where the relocated `syscall; int3` lives: the end of the page, out of the data's way.
    const SITE_OFFSET: u64 = Self::LEN - 16;

    /// Where the [`BATCH_LOOP`] lives, just below the site; the batch table is what lies
    /// below it.
    const BATCH_OFFSET: u64 = Self::LEN - 80;

    /// Maps a fresh private page in the tracee. For a remote whose calls trap, the page gets
    /// the syscall site and batch loop, and the thread's own code is put back at once: the
    /// dumped memory then never holds our instructions.
    pub fn map(remote: &mut Remote) -> io::Result<Self> {
        // Executable even when no code goes there, and wiped on fork (VM_WIPEONFORK): no
        // neighbour merges with it, not even the process's own read-write-execute memory (a
        // JIT's, which the dump dropped with it), so it stays a VMA of its own that the dump
        // leaves out.
        let exec = libc::PROT_EXEC;
        let addr = remote
            .call(
                libc::SYS_mmap,
                &[
                    0,
                    Self::LEN,
                    (libc::PROT_READ | libc::PROT_WRITE | exec) as u64,
                    (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                    u64::MAX,
                    0,
                ],
            )
            .map_err(|e| Self::why_denied(remote, e))?;
        // mmap may have merged it with such a neighbour: madvise splits it off again.
        let wipe = [addr, Self::LEN, libc::MADV_WIPEONFORK as u64, 0, 0, 0];
        if let Err(e) = remote.call(libc::SYS_madvise, &wipe) {
            let _ = remote.call(libc::SYS_munmap, &[addr, Self::LEN, 0, 0, 0, 0]);
            return Err(e);
        }
        if let Some(batch_code) = remote.home_batch() {
            return Ok(Self { addr, batch_code });
        }
        let scratch = Self {
            addr,
            batch_code: addr + Self::BATCH_OFFSET,
        };
        let mut code = BATCH_LOOP.to_vec();
        code.resize((Self::SITE_OFFSET - Self::BATCH_OFFSET) as usize, 0xcc);
        code.extend_from_slice(&SYSCALL_INT3);
        scratch.write(remote, Self::BATCH_OFFSET, &code)?;
        remote.move_site(scratch.site())?;
        Ok(scratch)
    }

    /// The reason a process refused the page, when it is memory-deny-write-execute (which
    /// refuses a writable and executable mapping): the attribute, named.
    fn why_denied(remote: &Remote, e: io::Error) -> io::Error {
        /// `PR_GET_MDWE` (linux/prctl.h).
        const PR_GET_MDWE: u64 = 66;
        if e.raw_os_error() != Some(libc::EACCES) {
            return e;
        }
        match remote.call(libc::SYS_prctl, &[PR_GET_MDWE, 0, 0, 0, 0, 0]) {
            Ok(flags) if flags != 0 => io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "memory-deny-write-execute (PR_SET_MDWE, flags {flags:#x}) is set, which \
                     cryo does not support: its calls in the process need a writable and \
                     executable page"
                ),
            ),
            _ => e,
        }
    }

    /// The page's batch loop and table, for [`Remote::batch`].
    pub fn batch_site(&self) -> BatchSite {
        BatchSite {
            code: self.batch_code,
            table: self.addr,
            table_len: Self::BATCH_OFFSET,
        }
    }

    /// Runs `n` calls that each write `out_len` bytes into memory, in as few stops as the
    /// page holds: `make(i, slot)` builds call `i` with `slot`, the address of its own
    /// output in the page (after the table). Returns the outputs, `out_len` bytes per call.
    pub fn batch_reading(
        &self,
        remote: &Remote,
        n: usize,
        out_len: usize,
        make: impl Fn(usize, u64) -> BatchCall,
    ) -> Result<Vec<u8>, BatchError> {
        self.batch_reading_results(remote, n, out_len, make)
            .map(|(outputs, _)| outputs)
    }

    /// Like [`Scratch::batch_reading`], with the calls' results too (for calls that answer
    /// in their return value rather than in memory).
    pub fn batch_reading_results(
        &self,
        remote: &Remote,
        n: usize,
        out_len: usize,
        make: impl Fn(usize, u64) -> BatchCall,
    ) -> Result<(Vec<u8>, Vec<u64>), BatchError> {
        match self.batch_reading_until_failure(remote, n, out_len, make) {
            (outputs, results, None) => Ok((outputs, results)),
            (_, _, Some(failed)) => Err(failed),
        }
    }

    /// Like [`Scratch::batch_reading_results`], keeping what the calls before a failing one
    /// wrote and returned: for a last call whose failure is an answer (no such key).
    pub fn batch_reading_until_failure(
        &self,
        remote: &Remote,
        n: usize,
        out_len: usize,
        make: impl Fn(usize, u64) -> BatchCall,
    ) -> (Vec<u8>, Vec<u64>, Option<BatchError>) {
        let per_stop = (Self::BATCH_OFFSET as usize / (BATCH_ENTRY + out_len)).max(1);
        let mut outputs = vec![0u8; n * out_len];
        let mut results = Vec::with_capacity(n);
        for first in (0..n).step_by(per_stop) {
            let count = per_stop.min(n - first);
            let slots = self.addr + (count * BATCH_ENTRY) as u64;
            let calls: Vec<BatchCall> = (0..count)
                .map(|i| make(first + i, slots + (i * out_len) as u64))
                .collect();
            let blame = |index: usize, error: io::Error, results: Vec<u64>| BatchError {
                index,
                error,
                results,
            };
            let (ran, failed) = match remote.batch(self.batch_site(), &calls) {
                Ok(r) => {
                    results.extend(r);
                    (count, None)
                }
                Err(e) => {
                    results.extend(e.results);
                    (e.index, Some((first + e.index, e.error)))
                }
            };
            let out = &mut outputs[first * out_len..(first + ran) * out_len];
            if let Err(e) = self.read(remote, slots - self.addr, out) {
                return (outputs, results.clone(), Some(blame(first, e, results)));
            }
            if let Some((index, error)) = failed {
                return (outputs, results.clone(), Some(blame(index, error, results)));
            }
        }
        (outputs, results, None)
    }

    /// The `syscall; int3` in the page, for a remote whose calls trap: any thread of the task
    /// can run calls from it.
    pub fn site(&self) -> u64 {
        self.addr + Self::SITE_OFFSET
    }

    /// Whether `addr` lies in the scratch page.
    pub fn contains(&self, addr: u64) -> bool {
        (self.addr..self.addr + Self::LEN).contains(&addr)
    }

    /// Writes `data` at `offset` into the scratch page.
    pub fn write(&self, remote: &Remote, offset: u64, data: &[u8]) -> io::Result<u64> {
        pt::write_mem(remote.tid, self.addr + offset, data)?;
        Ok(self.addr + offset)
    }

    /// Reads `buf.len()` bytes at `offset` of the scratch page.
    pub fn read(&self, remote: &Remote, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        pt::read_mem(remote.tid, self.addr + offset, buf)
    }

    /// Unmaps the page; the last call, as it may remove the site too.
    pub fn unmap(self, remote: &Remote) -> io::Result<()> {
        remote.call_last(libc::SYS_munmap, &[self.addr, Self::LEN])?;
        Ok(())
    }
}
