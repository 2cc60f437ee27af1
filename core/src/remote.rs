//! Remote system calls: a stopped thread made to execute one `syscall` instruction with
//! arguments of our choosing. The only module that moves a tracee's instruction pointer.

use std::io;

use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::sys::process::{vm_read, vm_write};
use crate::sys::ptrace::{self as pt, Regs};

/// `syscall; int3`: the call, then a trap that hands the thread back to us.
pub const SYSCALL_INT3: [u8; 3] = [0x0f, 0x05, 0xcc];

/// The batch loop, for the restore trampoline: for each 64-byte entry of the table at `rbx`
/// (syscall number, six arguments, result), `r12` entries in all, it loads the registers,
/// runs `syscall` and stores the result; it stops after the first call that fails (a result
/// in -4095..-1) or after the last, on an `int3`. One stop of the thread then runs many calls:
/// each stop costs two context switches, more than most calls themselves.
///
/// ```text
/// loop: mov rax,[rbx]; mov rdi,[rbx+8]; mov rsi,[rbx+16]; mov rdx,[rbx+24]
///       mov r10,[rbx+32]; mov r8,[rbx+40]; mov r9,[rbx+48]; syscall; mov [rbx+56],rax
///       cmp rax,-4095; jae done; add rbx,64; dec r12; jnz loop
/// done: int3
/// ```
pub const BATCH_LOOP: [u8; 51] = [
    0x48, 0x8b, 0x03, 0x48, 0x8b, 0x7b, 0x08, 0x48, 0x8b, 0x73, 0x10, 0x48, 0x8b, 0x53, 0x18, 0x4c,
    0x8b, 0x53, 0x20, 0x4c, 0x8b, 0x43, 0x28, 0x4c, 0x8b, 0x4b, 0x30, 0x0f, 0x05, 0x48, 0x89, 0x43,
    0x38, 0x48, 0x3d, 0x01, 0xf0, 0xff, 0xff, 0x73, 0x09, 0x48, 0x83, 0xc3, 0x40, 0x49, 0xff, 0xcc,
    0x75, 0xce, 0xcc,
];

/// Where [`BATCH_LOOP`] sits in the trampoline's code page, after `syscall; int3`.
pub const BATCH_LOOP_OFFSET: u64 = 16;

/// Bytes per entry of a batch table: number, six arguments, result.
const BATCH_ENTRY: usize = 64;

/// One call of a batch: a syscall number and its six arguments.
pub type BatchCall = (i64, [u64; 6]);

/// Where a thread runs batches: the [`BATCH_LOOP`] mapped in it and a writable table.
#[derive(Clone, Copy, Debug)]
pub struct BatchSite {
    /// Address of the loop's first instruction.
    pub code: u64,
    /// Address of the table, `table_len` writable bytes.
    pub table: u64,
    /// Size of the table: how many calls one stop can run is `table_len / 64`.
    pub table_len: u64,
}

/// A batch that stopped: the call at `index` failed with `error`, or the batch could not
/// run at all (then `index` is the first call not known to have run).
#[derive(Debug)]
pub struct BatchError {
    /// The call blamed.
    pub index: usize,
    /// Its error (the errno it returned, or why the batch could not run).
    pub error: io::Error,
    /// The results of the calls before `index`, which all ran.
    pub results: Vec<u64>,
}

/// A stopped thread we run system calls in.
pub struct Remote {
    tid: Pid,
    /// Registers the thread had when we took it; every call starts from them.
    saved_regs: Regs,
    saved_mask: u64,
    /// Address of the `syscall; int3` we execute.
    site: u64,
    /// The bytes our code replaced, if we wrote it over the thread's own code.
    saved_code: Option<[u8; 3]>,
    /// Set by [`Remote::release`]; otherwise dropping puts things back as best it can.
    released: bool,
    /// A SIGSTOP (the one signal our mask cannot hold back) arrived during a call: it was
    /// held back and is sent again when the thread is put back.
    stop_held: std::cell::Cell<bool>,
}

impl Remote {
    /// Takes a stopped thread and writes a syscall site over the code at its instruction
    /// pointer (put back by [`Remote::release`]); all signals are blocked meanwhile so none is
    /// delivered into our borrowed instruction stream.
    pub fn borrow(tid: Pid) -> io::Result<Self> {
        let saved_regs = pt::get_regs(tid)?;
        let saved_mask = pt::get_sigmask(tid)?;
        let site = saved_regs.rip;
        let mut saved = [0u8; 3];
        pt::read_mem(tid, site, &mut saved)?;
        pt::write_mem(tid, site, &SYSCALL_INT3)?;
        let remote = Self {
            tid,
            saved_regs,
            saved_mask,
            site,
            saved_code: Some(saved),
            released: false,
            stop_held: std::cell::Cell::new(false),
        };
        pt::set_sigmask(tid, !0)?;
        Ok(remote)
    }

    /// Takes a stopped thread that already has `syscall; int3` mapped at `site` (the restore
    /// trampoline).
    pub fn at_site(tid: Pid, site: u64) -> io::Result<Self> {
        let saved_regs = pt::get_regs(tid)?;
        let saved_mask = pt::get_sigmask(tid)?;
        pt::set_sigmask(tid, !0)?;
        Ok(Self {
            tid,
            saved_regs,
            saved_mask,
            site,
            saved_code: None,
            released: false,
            stop_held: std::cell::Cell::new(false),
        })
    }

    /// The thread.
    pub fn tid(&self) -> Pid {
        self.tid
    }

    /// Executes calls from `site` (which holds `syscall; int3`) from now on, and puts back
    /// the code the original site replaced.
    pub fn move_site(&mut self, site: u64) -> io::Result<()> {
        if let Some(code) = self.saved_code.take() {
            pt::write_mem(self.tid, self.site, &code)?;
        }
        self.site = site;
        Ok(())
    }

    /// The signal mask the thread had when taken.
    pub fn saved_mask(&self) -> u64 {
        self.saved_mask
    }

    /// The registers the thread had when taken.
    pub fn saved_regs(&self) -> &Regs {
        &self.saved_regs
    }

    /// Runs syscall `nr` with `args`; returns its raw result (negative errno on failure).
    pub fn syscall(&self, nr: i64, args: &[u64]) -> io::Result<i64> {
        self.run(nr, args, false)
    }

    /// Like [`Remote::call`], but single-steps over the `syscall` instead of trapping on the
    /// `int3` after it: for a call that unmaps the site itself.
    pub fn call_last(&self, nr: i64, args: &[u64]) -> io::Result<u64> {
        errno_result(self.run(nr, args, true)?)
    }

    fn run(&self, nr: i64, args: &[u64], step: bool) -> io::Result<i64> {
        let mut regs = self.saved_regs;
        regs.rip = self.site;
        regs.rax = nr as u64;
        let arg = |i: usize| args.get(i).copied().unwrap_or(0);
        regs.rdi = arg(0);
        regs.rsi = arg(1);
        regs.rdx = arg(2);
        regs.r10 = arg(3);
        regs.r8 = arg(4);
        regs.r9 = arg(5);
        let after = self.run_to_trap(regs, step, || format!("remote syscall {nr}"))?;
        let expected = self.site + if step { 2 } else { SYSCALL_INT3.len() as u64 };
        if after.rip != expected {
            return Err(io::Error::other(format!(
                "remote syscall {nr}: thread {} trapped at {:#x}, not after our site {:#x}",
                self.tid, after.rip, self.site
            )));
        }
        Ok(after.rax as i64)
    }

    /// Runs `calls` in order, as many per stop of the thread as `site`'s table holds, and
    /// returns their results; stops at the first that fails (the later ones do not run).
    pub fn batch(&self, site: BatchSite, calls: &[BatchCall]) -> Result<Vec<u64>, BatchError> {
        let per_stop = (site.table_len as usize / BATCH_ENTRY).max(1);
        let mut results = Vec::with_capacity(calls.len());
        for chunk in calls.chunks(per_stop) {
            let first = results.len();
            if let Err((i, error)) = self.batch_stop(site, chunk, &mut results) {
                results.truncate(first + i);
                return Err(BatchError {
                    index: first + i,
                    error,
                    results,
                });
            }
        }
        Ok(results)
    }

    /// One stop of a batch: `calls` fit the table. On failure, the index within `calls`.
    fn batch_stop(
        &self,
        site: BatchSite,
        calls: &[BatchCall],
        results: &mut Vec<u64>,
    ) -> Result<(), (usize, io::Error)> {
        let mut table = Vec::with_capacity(calls.len() * BATCH_ENTRY);
        for (nr, args) in calls {
            table.extend_from_slice(&nr.to_ne_bytes());
            for a in args {
                table.extend_from_slice(&a.to_ne_bytes());
            }
            table.extend_from_slice(&u64::MAX.to_ne_bytes());
        }
        let not_run = |e: io::Error| (0, e);
        let n = vm_write(self.tid, site.table, &table).map_err(not_run)?;
        if n != table.len() {
            return Err(not_run(io::Error::other("batch table written in part")));
        }
        let mut regs = self.saved_regs;
        regs.rip = site.code;
        regs.rbx = site.table;
        regs.r12 = calls.len() as u64;
        let after = self
            .run_to_trap(regs, false, || "remote batch".to_string())
            .map_err(not_run)?;
        if after.rip != site.code + BATCH_LOOP.len() as u64 {
            return Err(not_run(io::Error::other(format!(
                "remote batch: thread {} trapped at {:#x}, not at the end of the loop",
                self.tid, after.rip
            ))));
        }
        let ran = ((after.rbx.wrapping_sub(site.table)) as usize / BATCH_ENTRY).min(calls.len());
        let n = vm_read(self.tid, site.table, &mut table).map_err(not_run)?;
        if n != table.len() {
            return Err(not_run(io::Error::other("batch table read in part")));
        }
        for (i, entry) in table.chunks_exact(BATCH_ENTRY).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(&entry[BATCH_ENTRY - 8..]);
            match errno_result(i64::from_ne_bytes(word)) {
                Ok(v) if i < ran || ran == calls.len() => results.push(v),
                Ok(_) => {
                    return Err((i, io::Error::other("remote batch stopped before this call")))
                }
                Err(e) => return Err((i, e)),
            }
        }
        Ok(())
    }

    /// Resumes the thread with `regs` (no syscall in progress, so no restart fixup) until it
    /// traps; returns its registers then. `what` names the call for errors.
    fn run_to_trap(
        &self,
        mut regs: Regs,
        step: bool,
        what: impl Fn() -> String,
    ) -> io::Result<Regs> {
        regs.orig_rax = u64::MAX;
        pt::set_regs(self.tid, &regs)?;
        if step {
            ptrace::step(self.tid, None).map_err(io::Error::from)?;
        } else {
            ptrace::cont(self.tid, None).map_err(io::Error::from)?;
        }
        loop {
            match waitpid(self.tid, Some(WaitPidFlag::__WALL)).map_err(io::Error::from)? {
                WaitStatus::Stopped(_, Signal::SIGTRAP) => break,
                WaitStatus::Stopped(_, Signal::SIGSTOP) => {
                    // Sent to the process just before we froze it; it must not stop inside
                    // our call. Held back, sent again when the thread is put back.
                    self.stop_held.set(true);
                    if step {
                        ptrace::step(self.tid, None).map_err(io::Error::from)?;
                    } else {
                        ptrace::cont(self.tid, None).map_err(io::Error::from)?;
                    }
                }
                WaitStatus::Stopped(_, sig) => {
                    return Err(io::Error::other(format!(
                        "{}: thread {} stopped by {sig:?} instead of our trap",
                        what(),
                        self.tid
                    )))
                }
                WaitStatus::PtraceEvent(..) => {
                    ptrace::cont(self.tid, None).map_err(io::Error::from)?;
                }
                WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                    return Err(io::Error::other(format!(
                        "{}: thread {} died",
                        what(),
                        self.tid
                    )))
                }
                _ => continue,
            }
        }
        pt::get_regs(self.tid)
    }

    /// Like [`Remote::syscall`], with a negative result turned into an error.
    pub fn call(&self, nr: i64, args: &[u64]) -> io::Result<u64> {
        errno_result(self.syscall(nr, args)?)
    }

    /// Puts back the code, mask and registers the thread had, so it resumes as if nothing
    /// happened.
    pub fn release(mut self) -> io::Result<()> {
        self.released = true;
        self.put_back()
    }

    /// Forgets the saved state: the caller sets the thread's final registers itself (restore).
    pub fn dismiss(mut self) {
        self.released = true;
    }

    fn put_back(&self) -> io::Result<()> {
        if let Some(code) = self.saved_code {
            pt::write_mem(self.tid, self.site, &code)?;
        }
        pt::set_sigmask(self.tid, self.saved_mask)?;
        pt::set_regs(self.tid, &self.saved_regs)?;
        if self.stop_held.get() {
            nix::sys::signal::kill(self.tid, Signal::SIGSTOP).map_err(io::Error::from)?;
        }
        Ok(())
    }
}

fn errno_result(r: i64) -> io::Result<u64> {
    if (-4095..0).contains(&r) {
        Err(io::Error::from_raw_os_error(-r as i32))
    } else {
        Ok(r as u64)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        if !self.released {
            if let Err(e) = self.put_back() {
                tracing::warn!(tid = %self.tid, "cannot put the thread back as it was: {e}");
            }
        }
    }
}

/// One page of the tracee's memory we map for arguments and results of remote calls.
pub struct Scratch {
    /// Its address in the tracee.
    pub addr: u64,
}

impl Scratch {
    /// Size of the scratch area.
    pub const LEN: u64 = 4096;

    /// Where the relocated `syscall; int3` lives: the end of the page, out of the data's way.
    const SITE_OFFSET: u64 = Self::LEN - 16;

    /// Where the [`BATCH_LOOP`] lives, just below the site; the batch table is what lies
    /// below it.
    const BATCH_OFFSET: u64 = Self::LEN - 80;

    /// Maps a fresh private page in the tracee and moves the remote's syscall site into it,
    /// putting the thread's own code back at once: the dumped memory then never holds our
    /// instructions.
    pub fn map(remote: &mut Remote) -> io::Result<Self> {
        let addr = remote.call(
            libc::SYS_mmap,
            &[
                0,
                Self::LEN,
                (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        let scratch = Self { addr };
        let mut code = BATCH_LOOP.to_vec();
        code.resize((Self::SITE_OFFSET - Self::BATCH_OFFSET) as usize, 0xcc);
        code.extend_from_slice(&SYSCALL_INT3);
        scratch.write(remote, Self::BATCH_OFFSET, &code)?;
        remote.move_site(scratch.site())?;
        Ok(scratch)
    }

    /// The page's batch loop and table, for [`Remote::batch`].
    pub fn batch_site(&self) -> BatchSite {
        BatchSite {
            code: self.addr + Self::BATCH_OFFSET,
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
            match remote.batch(self.batch_site(), &calls) {
                Ok(r) => results.extend(r),
                Err(e) => {
                    results.extend(e.results);
                    return Err(blame(first + e.index, e.error, results));
                }
            }
            let out = &mut outputs[first * out_len..(first + count) * out_len];
            self.read(remote, slots - self.addr, out)
                .map_err(|e| blame(first, e, results.clone()))?;
        }
        Ok((outputs, results))
    }

    /// The `syscall; int3` in the page: any thread of the task can run calls from it.
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

    /// Unmaps the page; the last call, as it removes the site too.
    pub fn unmap(self, remote: &Remote) -> io::Result<()> {
        remote.call_last(libc::SYS_munmap, &[self.addr, Self::LEN])?;
        Ok(())
    }
}
